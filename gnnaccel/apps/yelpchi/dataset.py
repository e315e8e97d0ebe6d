"""The YelpChi stream: reviews relabelled in stream order (by day, then CARE-GNN node id), their causal
features, the union of the three relations with per-edge relation bitmasks, the date split and the batches.

Node ids here are stream positions, so that the engine's growth (new nodes get the next ids) numbers each
arriving review with its position. The split is by date: the training period is the first days holding
``train_fraction`` of the reviews, the threshold (validation) period the next ``val_fraction``, the stream the
rest; a day is never split between periods.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

from ...graph import Graph
from .data import RELATIONS, Reviews, build_relations, load_reviews
from .features import FEATURE_NAMES, causal_features, stream_order

__all__ = ["StreamData", "prepare", "day_cut", "batches"]


@dataclass
class StreamData:
    """Everything the application needs, in stream order (node ``i`` = the ``i``-th review to arrive).

    Attributes:
        reviews: the reviews in stream order. care_id: their CARE-GNN node ids.
        raw: causal features [n, F] (float32, not standardised). labels: int64 [n] (1 = spam). day: int64 [n].
        src, dst, mask: the union edges (both directions; ``mask`` = relation bitmask, bit r = RELATIONS[r]),
            sorted by ``max(src, dst)`` (the later endpoint: when the edge appears).
        train_end, val_end: stream positions where the threshold period and the stream start.
    """

    reviews: Reviews
    care_id: np.ndarray
    raw: np.ndarray
    labels: np.ndarray
    day: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    mask: np.ndarray
    train_end: int
    val_end: int

    @property
    def num_nodes(self) -> int:
        return int(self.labels.shape[0])

    def edges_upto(self, n: int) -> int:
        """Number of union edges among the first ``n`` reviews (a prefix of ``src``/``dst``/``mask``)."""
        return int(np.searchsorted(self._appears, n, side="left"))

    def __post_init__(self):
        self._appears = np.maximum(self.src, self.dst)

    def graph(self, n: int, relational: bool) -> Graph:
        """The graph among the first ``n`` reviews: relation bitmasks as edge values (relational) or plain."""
        e = self.edges_upto(n)
        ei = torch.from_numpy(np.stack([self.src[:e], self.dst[:e]]))
        w = torch.from_numpy(self.mask[:e].astype(np.float32)) if relational else None
        return Graph.from_edge_index(ei, n, w)

    def batch_edges(self, start: int, stop: int) -> Tuple[np.ndarray, np.ndarray]:
        """Edges that reviews ``start .. stop - 1`` bring: to earlier reviews and among themselves, both
        directions. Returns (edge_index [2, E] int64, relation bitmask [E] float32)."""
        a, b = self.edges_upto(start), self.edges_upto(stop)
        return np.stack([self.src[a:b], self.dst[a:b]]), self.mask[a:b].astype(np.float32)


def day_cut(day: np.ndarray, fraction: float) -> int:
    """The first stream position of the day on which the cumulative share of reviews reaches ``fraction``
    (days are sorted), so that no day is split."""
    n = day.shape[0]
    if n == 0:
        return 0
    pos = min(n - 1, int(np.ceil(fraction * n)))
    return int(np.searchsorted(day, day[pos], side="left"))


def union_edges(reviews: Reviews) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The union of RELATIONS as (src, dst, bitmask) arrays over ``reviews``' positions (both directions)."""
    rel = build_relations(reviews)
    union = None
    for r, name in enumerate(RELATIONS):
        m = rel[name].astype(np.int64) * (1 << r)
        union = m if union is None else union + m
    coo = union.tocoo()
    return coo.col.astype(np.int64), coo.row.astype(np.int64), coo.data.astype(np.int64)


def prepare(data_dir=None, train_fraction: float = 0.6, val_fraction: float = 0.2,
            max_days: Optional[int] = None, reviews: Optional[Reviews] = None) -> StreamData:
    """Load, build and split.

    Args:
        data_dir: directory of ``yelpchi_raw/metadata.gz`` (default: :func:`.data.default_data_dir`).
        train_fraction, val_fraction: shares of the timeline (by review count, cut at day boundaries).
        max_days: keep only the last ``max_days`` days of the timeline (small runs for tests), else all.
        reviews: use these reviews instead of reading the file.
    Returns:
        :class:`StreamData`.
    """
    if not (0 < train_fraction < 1 and 0 < val_fraction < 1 and train_fraction + val_fraction < 1):
        raise ValueError(f"need 0 < train_fraction, val_fraction and their sum < 1, got {train_fraction}, "
                         f"{val_fraction}")
    reviews = load_reviews(data_dir) if reviews is None else reviews
    order = stream_order(reviews)
    if max_days is not None:
        if isinstance(max_days, bool) or not isinstance(max_days, int) or max_days < 3:
            raise ValueError(f"max_days must be an int >= 3, got {max_days!r}")
        days = np.unique(reviews.day)
        order = order[reviews.day[order] >= days[-min(max_days, days.size)]]
    ordered = reviews.subset(order)
    raw = causal_features(ordered)  # causal: a suffix of the timeline is a timeline of its own
    src, dst, mask = union_edges(ordered)
    appears = np.maximum(src, dst)
    by_time = np.lexsort((src, dst, appears))
    day = ordered.day
    train_end = day_cut(day, train_fraction)
    val_end = day_cut(day, train_fraction + val_fraction)
    if not 0 < train_end < val_end < len(ordered):
        raise ValueError(f"the split leaves an empty period (train ends at {train_end}, threshold period at "
                         f"{val_end}, {len(ordered)} reviews): use more days")
    return StreamData(ordered, order, raw, ordered.label.copy(), day, src[by_time], dst[by_time], mask[by_time],
                      train_end, val_end)


def batches(data: StreamData, start: int, stop: int, size="day") -> List[Tuple[int, int]]:
    """Consecutive ``(a, b)`` stream ranges covering ``[start, stop)``: one per day (``size="day"``) or of
    ``size`` reviews (int)."""
    if size == "day":
        day = data.day[start:stop]
        if day.size == 0:
            return []
        cuts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]]) + start
        bounds = np.r_[cuts, stop]
        return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"batch size must be 'day' or a positive int, got {size!r}")
    return [(a, min(a + size, stop)) for a in range(start, stop, size)]


FEATURES = FEATURE_NAMES

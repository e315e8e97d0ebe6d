"""Streaming reviews into BatchedEngines: each batch's reviews join the graph (``engine.add_nodes`` with
their edges to earlier reviews, both directions, and their causal features) and are scored
(``engine.predict``). Several engines step through the same batches interleaved (engine order rotated every
batch), so that their latencies are measured side by side under the same machine load."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from .dataset import StreamData
from .training import spam_score

__all__ = ["Lane", "run_stream"]


@dataclass
class Lane:
    """One engine in a stream: ``relational`` engines take the relation bitmasks as edge values.

    After the stream: ``scores`` (spam score per streamed review, in stream order), and per batch
    ``add_s`` (seconds in ``add_nodes``), ``predict_s`` (seconds in ``predict``)."""

    name: str
    engine: object
    relational: bool
    scores: List[np.ndarray] = field(default_factory=list)
    add_s: List[float] = field(default_factory=list)
    predict_s: List[float] = field(default_factory=list)

    @property
    def latency_s(self) -> np.ndarray:
        """Per batch: ingest + score (add_nodes + predict) seconds."""
        return np.asarray(self.add_s) + np.asarray(self.predict_s)

    def all_scores(self) -> np.ndarray:
        return np.concatenate(self.scores) if self.scores else np.zeros(0)


def run_stream(lanes: Sequence[Lane], data: StreamData, x: torch.Tensor, ranges: Sequence[Tuple[int, int]],
               progress: bool = True, desc: str = "stream") -> Sequence[Lane]:
    """Feed the batches ``ranges`` (stream positions ``[a, b)``, consecutive, starting at every engine's
    ``num_nodes``) to every lane.

    Args:
        lanes: the engines. data: the stream's edges. x: standardised features of every review (torch).
        ranges: from :func:`.dataset.batches`.
    Returns:
        ``lanes``, with scores and timings appended.
    """
    from tqdm.auto import tqdm

    with tqdm(total=len(ranges), desc=desc, unit="batch", leave=False,
              disable=not (progress and sys.stderr.isatty())) as bar:
        for i, (a, b) in enumerate(ranges):
            edges, mask = data.batch_edges(a, b)
            edge_index = torch.from_numpy(edges)
            weight = torch.from_numpy(mask)
            feats = x[a:b]
            for k in range(len(lanes)):
                lane = lanes[(i + k) % len(lanes)]
                t0 = time.perf_counter()
                ids = lane.engine.add_nodes(feats, edge_index, weight if lane.relational else None, first_id=a)
                t1 = time.perf_counter()
                out = lane.engine.predict(ids)
                t2 = time.perf_counter()
                lane.add_s.append(t1 - t0)
                lane.predict_s.append(t2 - t1)
                lane.scores.append(spam_score(out))
            bar.update(1)
    return lanes

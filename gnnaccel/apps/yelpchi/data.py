"""YelpChi review records and the CARE-GNN review graph built from them.

The raw file ``metadata.gz`` holds one line per review, ``user_id prod_id rating label date`` (label -1 =
spam). CARE-GNN's YelpChi drops every product with more than 800 reviews (45,954 reviews left, 14.5% spam)
and numbers the kept reviews by the first appearance of their user among the kept lines, then by file order
within the user. Its three relations are symmetric and loop-free:

* R-U-R: same user;
* R-S-R: same product and same star rating;
* R-T-R: same product in the same calendar month (the reconstruction's ``rtr_month``; CARE-GNN's own R-T-R
  is not reproduced by any definition tried, see the data's SOURCES.md).

Everything here is vectorised (sorting and grouping in numpy, CSR assembly in scipy): the R-S-R relation alone
has 6.8 million directed entries.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np

__all__ = ["Reviews", "RELATIONS", "MAX_PRODUCT_REVIEWS", "default_data_dir", "load_reviews", "relation_csr",
           "build_relations", "group_pairs"]

RELATIONS = ("rur", "rsr", "rtr")
MAX_PRODUCT_REVIEWS = 800
DATA_ENV = "GNNACCEL_FRAUD_DATA"


@dataclass
class Reviews:
    """The kept reviews in CARE-GNN node order (arrays of equal length ``n``).

    ``user``, ``product`` (int64 raw ids), ``rating`` (float64 stars 1-5), ``label`` (int64, 1 = spam),
    ``day`` (int64 days since 1970-01-01)."""

    user: np.ndarray
    product: np.ndarray
    rating: np.ndarray
    label: np.ndarray
    day: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def subset(self, index: np.ndarray) -> "Reviews":
        """The reviews ``index`` (in that order)."""
        return Reviews(*(a[index] for a in (self.user, self.product, self.rating, self.label, self.day)))

    @property
    def month(self) -> np.ndarray:
        """Calendar month index (year * 12 + month) of each review."""
        return self.day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def default_data_dir() -> Path:
    """``$GNNACCEL_FRAUD_DATA`` if set, else ``$GNNACCEL_DATA/fraud`` (the tests' data variable), else
    ``../shared/data/fraud`` relative to the repository."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    if os.environ.get("GNNACCEL_DATA"):
        return Path(os.environ["GNNACCEL_DATA"]) / "fraud"
    return Path(__file__).resolve().parents[3].parent / "shared" / "data" / "fraud"


def _metadata_path(data_dir) -> Path:
    data_dir = Path(data_dir)
    path = data_dir / "yelpchi_raw" / "metadata.gz"
    if not path.is_file():
        alt = data_dir / "metadata.gz"
        if alt.is_file():
            return alt
        raise FileNotFoundError(f"YelpChi records not found: expected {path} (set --data or ${DATA_ENV} to the "
                                "directory holding yelpchi_raw/metadata.gz)")
    return path


def parse_records(lines) -> Dict[str, np.ndarray]:
    """Columns of raw record lines ``user_id prod_id rating label date`` (file order, nothing dropped).

    Raises ValueError naming the first malformed line."""
    cols = [[], [], [], [], []]
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise ValueError(f"record line {number}: expected 5 fields (user prod rating label date), got "
                             f"{len(parts)}: {line.strip()[:80]!r}")
        for c, p in zip(cols, parts):
            c.append(p)
    try:
        user = np.asarray(cols[0], dtype=np.int64)
        product = np.asarray(cols[1], dtype=np.int64)
        rating = np.asarray(cols[2], dtype=np.float64)
        label = np.asarray(cols[3], dtype=np.int64)
        day = np.asarray(cols[4], dtype="datetime64[D]").astype(np.int64)
    except ValueError as exc:
        raise ValueError(f"malformed YelpChi record field: {exc}") from exc
    if not np.isin(label, (-1, 1)).all():
        raise ValueError("labels must be -1 (spam) or 1 (not spam)")
    return {"user": user, "product": product, "rating": rating, "label": label, "day": day}


def care_gnn_order(user: np.ndarray) -> np.ndarray:
    """CARE-GNN's node order of kept lines: by the first appearance of the user, then by file order."""
    _, first, inverse = np.unique(user, return_index=True, return_inverse=True)
    return np.lexsort((np.arange(user.shape[0]), first[inverse]))


def load_reviews(data_dir=None, max_product_reviews: int = MAX_PRODUCT_REVIEWS) -> Reviews:
    """Read ``metadata.gz`` (read only) and return the CARE-GNN YelpChi reviews in its node order.

    Args:
        data_dir: directory holding ``yelpchi_raw/metadata.gz`` (default: :func:`default_data_dir`).
        max_product_reviews: products with more reviews than this are dropped (CARE-GNN: 800).
    Returns:
        :class:`Reviews` (45,954 reviews for the real file).
    """
    path = _metadata_path(default_data_dir() if data_dir is None else data_dir)
    with gzip.open(path, "rt", encoding="ascii") as f:
        raw = parse_records(f)
    _, inverse, counts = np.unique(raw["product"], return_inverse=True, return_counts=True)
    kept = np.flatnonzero(counts[inverse] <= max_product_reviews)
    kept = kept[care_gnn_order(raw["user"][kept])]
    return Reviews(raw["user"][kept], raw["product"][kept], raw["rating"][kept],
                   (raw["label"][kept] == -1).astype(np.int64), raw["day"][kept])


def group_pairs(keys: np.ndarray) -> np.ndarray:
    """Every ordered pair ``(i, j)``, ``i != j``, of positions with equal ``keys``: int64 [2, P].

    Vectorised: positions sorted by key; a group of size s contributes s * (s - 1) pairs."""
    n = keys.shape[0]
    if n == 0:
        return np.zeros((2, 0), dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
    sizes = np.diff(np.r_[starts, n])
    size_of = np.repeat(sizes, sizes)  # per sorted position: its group's size
    start_of = np.repeat(starts, sizes)
    total = int(size_of.sum())
    rows = np.repeat(order, size_of)
    # for each sorted position p, the members start_of[p] .. start_of[p] + size - 1 of its group
    offset = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(size_of) - size_of, size_of)
    cols = order[np.repeat(start_of, size_of) + offset]
    keep = rows != cols
    return np.stack([rows[keep], cols[keep]])


def _key(*columns: np.ndarray) -> np.ndarray:
    """One int64 key per row identifying the tuple of the columns' values."""
    key = np.zeros(columns[0].shape[0], dtype=np.int64)
    for c in columns:
        _, inv = np.unique(c, return_inverse=True)
        key = key * (int(inv.max()) + 1 if inv.size else 1) + inv
    return key


def relation_keys(reviews: Reviews) -> Dict[str, np.ndarray]:
    """The grouping key of each relation: two reviews are related when their keys are equal."""
    return {"rur": _key(reviews.user),
            "rsr": _key(reviews.product, reviews.rating),
            "rtr": _key(reviews.product, reviews.month)}


def relation_csr(pairs: np.ndarray, num_nodes: int):
    """A symmetric 0/1 scipy CSR (sorted indices, no duplicates) of ``pairs`` [2, P]."""
    import scipy.sparse as sp

    m = sp.csr_matrix((np.ones(pairs.shape[1], dtype=np.int8), (pairs[0], pairs[1])), shape=(num_nodes, num_nodes))
    m.sum_duplicates()
    m.sort_indices()
    return m


def build_relations(reviews: Reviews, relations=RELATIONS) -> Dict[str, "object"]:
    """The CARE-GNN relations of ``reviews`` as scipy CSR matrices [n, n] (symmetric, no self loops).

    Args:
        reviews: the reviews (node ``i`` = ``reviews[i]``).
        relations: names among ``RELATIONS``.
    Returns:
        dict name -> ``scipy.sparse.csr_matrix`` (int8 ones).
    """
    keys = relation_keys(reviews)
    unknown = set(relations) - set(RELATIONS)
    if unknown:
        raise ValueError(f"unknown relations {sorted(unknown)}; expected names among {RELATIONS}")
    return {r: relation_csr(group_pairs(keys[r]), len(reviews)) for r in relations}

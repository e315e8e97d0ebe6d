"""Causal behavioural features of YelpChi reviews, computed from the records alone (the review text behind
the original 32 handcrafted features is not available).

Causality: reviews are ordered by ``(day, node id)`` (the *stream order*, in which the application feeds
them). A review's features depend only on itself and on reviews earlier in that order:

* aggregates over a user's or a product's history ("so far": counts, means, spread, extreme share, mean
  absolute deviation, windowed counts) use reviews dated **strictly before** its day;
* same-day counts use the same-day reviews up to and including itself in stream order (**not after** it).

So a review's features never change when later reviews are added or removed (tests compare a prefix of the
timeline against the whole). Everything is vectorised: sort by ``(key, day, id)``, then grouped prefix sums.
Sums are of integers or of values quantised to ``2**-10`` so that they are exact in float64 (the features of a
review are then bit-identical whatever other reviews exist).
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from .data import Reviews

__all__ = ["FEATURE_NAMES", "causal_features", "stream_order"]

FEATURE_NAMES: Tuple[str, ...] = (
    "rating", "extreme_rating",
    "prod_log_count_before", "prod_mean_before", "deviation", "abs_deviation", "prod_rating_std_before",
    "prod_extreme_share_before", "prod_same_rating_share_before", "prod_log_days_since_first",
    "prod_log_same_day_so_far", "prod_log_count_last_7d", "prod_log_count_last_30d",
    "user_log_count_before", "user_mean_before", "user_rating_std_before", "user_extreme_share_before",
    "user_mean_abs_deviation_before", "user_log_days_since_first", "user_log_days_since_previous",
    "user_first_review", "user_log_same_day_so_far", "user_log_count_last_30d",
)
_QUANTUM = 1.0 / 1024.0


def stream_order(reviews: Reviews) -> np.ndarray:
    """Node ids in stream order: by day, then by node id."""
    return np.lexsort((np.arange(len(reviews)), reviews.day))


class _Grouped:
    """Reviews sorted by (key, day, id): prefix sums of a value over each key's reviews dated strictly before
    a review's day, and same-day positions."""

    def __init__(self, key: np.ndarray, day: np.ndarray):
        n = key.shape[0]
        self.n = n
        self.order = np.lexsort((np.arange(n), day, key))
        k, d = key[self.order], day[self.order]
        idx = np.arange(n)
        new_group = np.r_[True, k[1:] != k[:-1]] if n else np.zeros(0, bool)
        new_run = new_group | (np.r_[True, d[1:] != d[:-1]] if n else np.zeros(0, bool))
        self.group_start = np.maximum.accumulate(np.where(new_group, idx, 0)) if n else idx
        self.run_start = np.maximum.accumulate(np.where(new_run, idx, 0)) if n else idx
        self.sorted_key, self.sorted_day = k, d

    def _unsort(self, sorted_values: np.ndarray) -> np.ndarray:
        out = np.empty_like(sorted_values)
        out[self.order] = sorted_values
        return out

    def before(self, values: np.ndarray) -> np.ndarray:
        """Sum of ``values`` over the same key's reviews dated strictly before each review's day."""
        s = np.r_[0.0, np.cumsum(values[self.order].astype(np.float64))]
        return self._unsort(s[self.run_start] - s[self.group_start])

    def count_before(self) -> np.ndarray:
        return self._unsort((self.run_start - self.group_start).astype(np.float64))

    def same_day_so_far(self) -> np.ndarray:
        """Reviews of the same key on the same day up to and including this one (stream order)."""
        return self._unsort((np.arange(self.n) - self.run_start + 1).astype(np.float64))

    def first_day(self) -> np.ndarray:
        """Day of the key's first review (never after the review's own day)."""
        return self._unsort(self.sorted_day[self.group_start].astype(np.float64))

    def previous_day(self) -> np.ndarray:
        """Day of the key's last review dated strictly before (NaN when none)."""
        prev = self.run_start - 1
        ok = prev >= self.group_start
        out = np.full(self.n, np.nan)
        out[ok] = self.sorted_day[prev[ok]]
        return self._unsort(out)

    def count_window(self, days: int) -> np.ndarray:
        """Reviews of the same key dated in ``[day - days, day)``."""
        k = self.sorted_key.astype(np.int64)
        d = self.sorted_day.astype(np.int64)
        span = int(d.max() - d.min() + days + 2) if self.n else 1
        code = k * span + (d - (d.min() if self.n else 0))
        lo = np.searchsorted(code, code - days, side="left")
        hi = np.searchsorted(code, code, side="left")
        return self._unsort((hi - lo).astype(np.float64))


def _mean(total: np.ndarray, count: np.ndarray, fill: np.ndarray) -> np.ndarray:
    out = fill.astype(np.float64).copy()
    ok = count > 0
    out[ok] = total[ok] / count[ok]
    return out


def _std(total: np.ndarray, total_sq: np.ndarray, count: np.ndarray) -> np.ndarray:
    out = np.zeros(count.shape[0])
    ok = count > 0
    mean = total[ok] / count[ok]
    out[ok] = np.sqrt(np.maximum(total_sq[ok] / count[ok] - mean * mean, 0.0))
    return out


def causal_features(reviews: Reviews) -> np.ndarray:
    """The causal behavioural features (module docstring) of every review, float32 [n, len(FEATURE_NAMES)],
    rows in node order. Not standardised (the application standardises with training-period statistics).

    Args:
        reviews: the reviews (any subset of the timeline; each row depends only on itself and earlier reviews).
    Returns:
        numpy float32 array.
    """
    n = len(reviews)
    r = reviews.rating.astype(np.float64)
    extreme = ((r == 1) | (r == 5)).astype(np.float64)
    day = reviews.day.astype(np.int64)
    prod = _Grouped(reviews.product, day)
    user = _Grouped(reviews.user, day)
    prod_rating = _Grouped(reviews.product * 8 + reviews.rating.astype(np.int64), day)

    p_count = prod.count_before()
    p_mean = _mean(prod.before(r), p_count, r)
    deviation = r - p_mean
    abs_dev_q = np.round(np.abs(deviation) / _QUANTUM) * _QUANTUM  # exact partial sums below
    u_count = user.count_before()
    u_prev = user.previous_day()
    columns: List[np.ndarray] = [
        r, extreme,
        np.log1p(p_count), p_mean, deviation, np.abs(deviation), _std(prod.before(r), prod.before(r * r), p_count),
        _mean(prod.before(extreme), p_count, np.zeros(n)),
        _mean(prod_rating.count_before(), p_count, np.zeros(n)),
        np.log1p(day - prod.first_day()),
        np.log1p(prod.same_day_so_far()), np.log1p(prod.count_window(7)), np.log1p(prod.count_window(30)),
        np.log1p(u_count), _mean(user.before(r), u_count, r), _std(user.before(r), user.before(r * r), u_count),
        _mean(user.before(extreme), u_count, np.zeros(n)),
        _mean(user.before(abs_dev_q), u_count, np.zeros(n)),
        np.log1p(day - user.first_day()),
        np.log1p(np.where(np.isnan(u_prev), 0.0, day - u_prev)),
        ((u_count == 0) & (user.same_day_so_far() == 1)).astype(np.float64),
        np.log1p(user.same_day_so_far()), np.log1p(user.count_window(30)),
    ]
    out = np.stack(columns, axis=1) if n else np.zeros((0, len(FEATURE_NAMES)))
    assert out.shape[1] == len(FEATURE_NAMES)
    return out.astype(np.float32)

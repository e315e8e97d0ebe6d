"""Detection metrics of the YelpChi application: the F1-macro threshold, ROC-AUC, average precision, F1-macro
and recall at 90% precision (scikit-learn where it has them)."""
from __future__ import annotations

import numpy as np

__all__ = ["best_f1_threshold", "f1_macro", "detection_metrics", "recall_at_precision"]


def _sorted_counts(y: np.ndarray, s: np.ndarray):
    order = np.argsort(-s, kind="stable")
    ys, ss = y[order].astype(np.int64), s[order]
    last = np.r_[ss[1:] != ss[:-1], True]  # cut after the last of each run of equal scores
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(1 - ys)[last]
    return ss[last], tp, fp


def best_f1_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """The threshold ``t`` (predict spam when ``score >= t``) maximising F1-macro on ``(y, s)``: one of the
    observed scores (all cuts evaluated at once from sorted cumulative counts)."""
    y, s = np.asarray(y), np.asarray(s, dtype=np.float64)
    if y.size == 0:
        raise ValueError("best_f1_threshold needs at least one scored review")
    cuts, tp, fp = _sorted_counts(y, s)
    pos, n = int(y.sum()), y.size
    fn, tn = pos - tp, (n - pos) - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        f1_pos = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        f1_neg = np.where(2 * tn + fn + fp > 0, 2 * tn / (2 * tn + fn + fp), 0.0)
    return float(cuts[int(np.argmax((f1_pos + f1_neg) / 2))])


def f1_macro(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, (np.asarray(s) >= threshold).astype(np.int64), average="macro", zero_division=0))


def recall_at_precision(y: np.ndarray, s: np.ndarray, precision: float = 0.9) -> float:
    """The highest recall among thresholds whose precision is at least ``precision`` (0 if none)."""
    from sklearn.metrics import precision_recall_curve

    p, r, _ = precision_recall_curve(y, s)
    ok = p >= precision
    return float(r[ok].max()) if ok.any() else 0.0


def detection_metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict:
    """ROC-AUC, average precision, F1-macro at ``threshold`` and recall at 90% precision of scores ``s``."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y)
    both = 0 < y.sum() < y.size
    return {"roc_auc": float(roc_auc_score(y, s)) if both else float("nan"),
            "average_precision": float(average_precision_score(y, s)) if both else float("nan"),
            "f1_macro": f1_macro(y, s, threshold),
            "recall_at_90_precision": recall_at_precision(y, s, 0.9) if both else float("nan"),
            "threshold": float(threshold)}

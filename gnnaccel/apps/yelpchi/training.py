"""Training of the YelpChi detectors: the graph models (full batch on the training-period graph) and the
non-graph baselines (scikit-learn) on the same features."""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Standardiser", "train_graph_model", "train_baselines", "spam_score"]


@dataclass
class Standardiser:
    """Per-feature mean and standard deviation of the training period (applied to every review)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardiser":
        std = x.std(0)
        return cls(x.mean(0), np.where(std > 0, std, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


def spam_score(logits: torch.Tensor) -> np.ndarray:
    """The spam score of a model's two logits: ``logit_spam - logit_ham`` (monotone in the probability)."""
    logits = logits.detach().float()
    return (logits[:, 1] - logits[:, 0]).cpu().numpy().astype(np.float64)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=False, disable=not (enabled and sys.stderr.isatty()))


def train_graph_model(model: torch.nn.Module, graph, x: torch.Tensor, y: torch.Tensor, epochs: int = 60,
                      lr: float = 0.01, weight_decay: float = 5e-4, dropout: float = 0.0,
                      select: Optional[Callable[[torch.nn.Module], float]] = None, select_every: int = 10,
                      seed: int = 0, progress: bool = True, desc: str = "train") -> dict:
    """Full-batch Adam on every node of ``graph`` (the training-period graph: its nodes are the training
    reviews), class-weighted cross-entropy (spam is 14.5%).

    Args:
        model: a gnnaccel model with 2 outputs. graph, x, y: the training graph, features, labels (int64).
        epochs, lr, weight_decay: the optimiser. dropout: on the input features.
        select: optional score of the model (higher is better), evaluated every ``select_every`` epochs and at
            the end; the best weights are kept.
        seed: torch seed of the initialisation.
    Returns:
        {"epochs", "best_epoch", "best_select", "final_loss"}; the model is left in eval mode.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    counts = torch.bincount(y, minlength=2).clamp_min(1).double()
    weight = (counts.sum() / (2 * counts)).to(x.dtype)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best = (-float("inf"), -1, None)
    loss = torch.tensor(float("nan"))
    with _progress(epochs, desc, progress) as bar:
        for epoch in range(epochs):
            model.train()
            opt.zero_grad()
            h = F.dropout(x, dropout, training=True) if dropout else x
            loss = F.cross_entropy(model(h, graph), y, weight=weight)
            loss.backward()
            opt.step()
            bar.update(1)
            if select is not None and ((epoch + 1) % select_every == 0 or epoch == epochs - 1):
                model.eval()
                with torch.no_grad():
                    score = float(select(model))
                if score > best[0]:
                    best = (score, epoch, copy.deepcopy(model.state_dict()))
                bar.set_postfix(loss=f"{loss.item():.4f}", select=f"{score:.4f}")
    if best[2] is not None:
        model.load_state_dict(best[2])
    model.eval()
    return {"epochs": epochs, "best_epoch": best[1], "best_select": best[0], "final_loss": float(loss.detach())}


def train_baselines(x_train: np.ndarray, y_train: np.ndarray, seed: int = 0) -> dict:
    """Logistic regression (class-balanced) and a small MLP (64-32, early stopping) from scikit-learn.

    Returns:
        {"logreg": fitted estimator, "mlp": fitted estimator}; score with ``predict_proba(x)[:, 1]``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    logreg = LogisticRegression(class_weight="balanced", max_iter=2000).fit(x_train, y_train)
    mlp = MLPClassifier(hidden_layer_sizes=(64, 32), early_stopping=True, random_state=seed, max_iter=300,
                        alpha=1e-3).fit(x_train, y_train)
    return {"logreg": logreg, "mlp": mlp}

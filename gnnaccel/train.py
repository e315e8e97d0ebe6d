"""A short full-batch trainer for experiments: Adam, early stopping on validation F1-micro."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def is_multilabel(y: Tensor) -> bool:
    return y.dim() == 2 and y.is_floating_point()


def f1_micro(logits: Tensor, y: Tensor) -> float:
    """F1-micro. Single-label (``y`` int [N]): equals accuracy of argmax. Multi-label (``y`` float [N, C]):
    a label is predicted where its logit is > 0; micro-averaged over all (node, label) pairs."""
    if logits.shape[0] != y.shape[0]:
        raise ValueError(f"logits has {logits.shape[0]} rows but y has {y.shape[0]}")
    if logits.shape[0] == 0:
        return float("nan")
    if is_multilabel(y):
        pred = logits > 0
        truth = y > 0.5
        tp = (pred & truth).sum().item()
        fp = (pred & ~truth).sum().item()
        fn = (~pred & truth).sum().item()
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return (logits.argmax(-1) == y).float().mean().item()


def loss_fn(logits: Tensor, y: Tensor) -> Tensor:
    if is_multilabel(y):
        return F.binary_cross_entropy_with_logits(logits, y)
    return F.cross_entropy(logits, y)


@torch.no_grad()
def evaluate(model, graph, x: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> float:
    """F1-micro of ``model`` (eval mode) on the nodes of ``mask`` (all if None)."""
    was_training = model.training
    model.eval()
    logits = model(x, graph)
    model.train(was_training)
    if mask is not None:
        logits, y = logits[mask], y[mask]
    return f1_micro(logits, y)


@dataclass
class TrainResult:
    best_epoch: int
    best_val: float
    history: List[dict] = field(default_factory=list)


def train(model, graph, x: Tensor, y: Tensor, train_mask: Tensor, val_mask: Tensor, epochs: int = 200,
          lr: float = 0.01, weight_decay: float = 5e-4, patience: int = 20, verbose: bool = False) -> TrainResult:
    """Full-batch training with Adam; keeps (and restores at the end) the weights of the best validation
    F1-micro, stopping after ``patience`` epochs without improvement."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best_val, best_epoch, best_state = -1.0, -1, None
    history = []
    for epoch in range(epochs):
        model.train()
        opt.zero_grad()
        loss = loss_fn(model(x, graph)[train_mask], y[train_mask])
        loss.backward()
        opt.step()
        val = evaluate(model, graph, x, y, val_mask)
        history.append({"epoch": epoch, "loss": loss.item(), "val_f1": val})
        if verbose:
            print(f"epoch {epoch:3d} loss {loss.item():.4f} val F1 {val:.4f}")
        if val > best_val:
            best_val, best_epoch, best_state = val, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(best_epoch, best_val, history)

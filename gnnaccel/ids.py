"""Node ids entering the library: the one validator (:func:`as_node_ids`).

Every public entry point that takes node ids from a caller (``BatchedEngine.predict`` / ``update_features`` /
``add_edges``, the layers' ``forward(rows=)``, ``model.layer``, the cache, graph updates) passes them through
:func:`as_node_ids`: integer tensors, Python lists/tuples of ints and numpy integer arrays are accepted;
floating-point, bool and complex ids, anything not 1-D and ids outside ``[0, num_nodes)`` are rejected with an
error that names the argument. Ids are widened to int64 before the bounds check and never narrowed, so an
int64 id >= 2**31 cannot wrap on an int32 graph.

Op entry points (:mod:`gnnaccel.ops`) do not call this: they check dtype and dims only (no data-dependent
checks inside ops; bounds are checked in the kernels).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_node_ids"]

_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _to_tensor(ids, name: str) -> Tensor:
    if isinstance(ids, Tensor):
        return ids
    if isinstance(ids, np.ndarray):
        if ids.dtype.kind == "u":
            # numpy unsigned ids: range-check in numpy (uint64 has no lossless torch equivalent), then widen.
            if ids.size and int(ids.max()) > np.iinfo(np.int64).max:
                raise ValueError(f"{name} holds a node id above the int64 range ({int(ids.max())})")
            ids = ids.astype(np.int64)
        elif ids.dtype.kind not in "i":
            raise TypeError(f"{name} must hold integer node ids, got a numpy array of {ids.dtype}")
        return torch.from_numpy(np.ascontiguousarray(ids))
    if isinstance(ids, (list, tuple, range)):
        if len(ids) == 0:
            return torch.empty(0, dtype=torch.long)
        for v in ids:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must hold integer node ids, got an element {v!r} of type "
                                f"{type(v).__name__}")
        try:
            return torch.tensor([int(v) for v in ids], dtype=torch.long)
        except (OverflowError, RuntimeError) as exc:
            raise ValueError(f"{name} holds a node id outside the int64 range") from exc
    if isinstance(ids, (bool, int, float, complex, np.generic)):
        raise TypeError(f"{name} must be a 1-D sequence of node ids (e.g. [{ids!r}]), got a scalar {ids!r}")
    raise TypeError(f"{name} must be node ids (a 1-D integer tensor, list or numpy array), got "
                    f"{type(ids).__name__}")


def as_node_ids(ids, num_nodes: int, name: str = "ids", *, device=None, allow_empty: bool = True) -> Tensor:
    """Validate node ids and return them as a 1-D int64 tensor.

    Args:
        ids: an integer tensor (any device), a list/tuple/range of ints, or a numpy integer array.
        num_nodes: ids must lie in ``[0, num_nodes)``.
        name: the argument's name, used in error messages.
        device: where the result lives (default: where ``ids`` are; host inputs -> CPU). Host inputs are
            checked before the copy.
        allow_empty: whether zero ids are accepted.

    Returns:
        LongTensor [len(ids)], contiguous (the input itself when it already is one on ``device``).

    Raises:
        TypeError: float / bool / complex ids, or a type that is not a sequence of ids.
        ValueError: not 1-D, empty when ``allow_empty`` is False, or an id outside ``[0, num_nodes)``.
    """
    t = _to_tensor(ids, name)
    if t.dtype not in _INT_DTYPES:
        kind = ("bool (a mask, not ids: use mask.nonzero().flatten())" if t.dtype == torch.bool
                else str(t.dtype))
        raise TypeError(f"{name} must hold integer node ids, got {kind}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {list(t.shape)}")
    if t.numel() == 0:
        if not allow_empty:
            raise ValueError(f"{name} is empty: give at least one node id")
    else:
        lo, hi = torch.stack(torch.aminmax(t)).tolist()  # one host synchronisation
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"{name} must be node ids in [0, {num_nodes}), got values in [{lo}, {hi}]")
    if t.dtype != torch.long:
        t = t.long()
    if device is not None:
        t = t.to(device)
    return t.contiguous()

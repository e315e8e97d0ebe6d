"""Save and load gnnaccel models, pruned or not: ``gnnaccel.save(model, path)``, ``gnnaccel.load(path)``.

The file is a ``torch.save`` of a plain dict (read back with ``weights_only=True``, so loading never runs
pickled code): a format tag and version, the model class and constructor arguments, every submodule's width
attributes (pruned layers are narrower than the constructor says), the state dict (weights, biases, per-branch
input index buffers of a batched-pruned first layer) and ``pruning_info`` if present.
"""
from __future__ import annotations

import os
from typing import Union

import torch
from torch import nn

FORMAT = "gnnaccel-model"
VERSION = 1
_WIDTH_ATTRS = ("in_channels", "out_channels", "self_channels", "in_features", "out_features", "num_features")

PathLike = Union[str, os.PathLike]


def _model_classes():
    from .models import GCN, GraphSAGE, SAINTGraphSAGE

    return {"GraphSAGE": GraphSAGE, "GCN": GCN, "SAINTGraphSAGE": SAINTGraphSAGE}


def _activation_name(act) -> object:
    from .nn.conv import _ACTIVATIONS

    if act is None:
        return None
    for name, fn in _ACTIVATIONS.items():
        if fn is act and name is not None:
            return name
    raise ValueError(f"cannot save a model with a custom activation {act!r}; use one of "
                     f"{[k for k, v in _ACTIVATIONS.items() if v is not None]}")


def save(model: nn.Module, path: PathLike) -> None:
    """Write ``model`` (a gnnaccel GraphSAGE / GCN / SAINTGraphSAGE, pruned or not) to ``path``."""
    classes = _model_classes()
    cls_name = type(model).__name__
    if classes.get(cls_name) is not type(model):
        raise TypeError(f"save supports gnnaccel {sorted(classes)} models, got {type(model).__module__}.{cls_name}")
    norm = "batchnorm" if any(isinstance(n, nn.BatchNorm1d) for n in model.norms) else None
    init = {"in_channels": model.in_channels, "hidden_channels": model.hidden_channels,
            "out_channels": model.out_channels, "num_layers": model.num_layers, "dropout": model.dropout,
            "act": _activation_name(model.act), "norm": norm}
    init.update(getattr(model, "conv_kwargs", {}))
    widths = {}
    for mod_name, module in model.named_modules():
        attrs = {a: getattr(module, a) for a in _WIDTH_ATTRS
                 if isinstance(getattr(module, a, None), int) and not isinstance(getattr(module, a), bool)}
        if attrs:
            widths[mod_name] = attrs
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "class": cls_name, "init": init, "widths": widths,
               "state_dict": state, "training": bool(model.training),
               "pruning_info": getattr(model, "pruning_info", None)}
    torch.save(payload, os.fspath(path))


def _locate(model: nn.Module, key: str):
    module_path, _, attr = key.rpartition(".")
    return (model.get_submodule(module_path) if module_path else model), attr


def load(path: PathLike, map_location=None) -> nn.Module:
    """Read a model written by :func:`save`. Raises ValueError naming the file if it is missing pieces, is
    truncated, or is not a gnnaccel model file."""
    path = os.fspath(path)
    try:
        payload = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated zip, foreign pickle, text file...
        raise ValueError(f"{path!r} is not a readable gnnaccel model file (truncated or foreign): "
                         f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a gnnaccel model file (no {FORMAT!r} format tag)")
    if payload.get("version") != VERSION:
        raise ValueError(f"{path!r} has gnnaccel model format version {payload.get('version')!r}; this gnnaccel "
                         f"reads version {VERSION}")
    missing = [k for k in ("class", "init", "widths", "state_dict") if k not in payload]
    if missing:
        raise ValueError(f"{path!r} is missing {missing}")
    classes = _model_classes()
    if payload["class"] not in classes:
        raise ValueError(f"{path!r} holds an unknown model class {payload['class']!r}")
    try:
        model = classes[payload["class"]](**payload["init"])
        for mod_name, attrs in payload["widths"].items():
            module = model.get_submodule(mod_name) if mod_name else model
            for a, v in attrs.items():
                setattr(module, a, v)
        # Pruned layers hold smaller tensors (and index buffers that are None in a fresh model): make room.
        own = model.state_dict()
        for key, value in payload["state_dict"].items():
            module, attr = _locate(model, key)
            if key in own and own[key].shape == value.shape and own[key].dtype == value.dtype:
                continue
            if attr in module._parameters:
                module._parameters[attr] = nn.Parameter(torch.empty_like(value))
            elif attr in module._buffers:
                module._buffers[attr] = torch.empty_like(value)
            else:
                raise KeyError(key)
        model.load_state_dict(payload["state_dict"], strict=True)
        for mod_name, module in model.named_modules():
            if isinstance(module, nn.Linear) and module.weight.shape != (module.out_features, module.in_features):
                raise ValueError(f"{mod_name}.weight has shape {list(module.weight.shape)} but the layer is "
                                 f"{module.in_features} -> {module.out_features}")
    except Exception as exc:
        raise ValueError(f"{path!r}: the stored architecture and weights do not fit together "
                         f"({type(exc).__name__}: {exc})") from exc
    if payload.get("pruning_info") is not None:
        model.pruning_info = payload["pruning_info"]
    model.train(payload.get("training", False))
    return model

"""Save and load gnnaccel models, pruned or not: ``gnnaccel.save(model, path)``, ``gnnaccel.load(path)``.

File format (version 2): a ``torch.save`` of a plain dict, read back with ``weights_only=True`` (loading never
runs pickled code) holding a format tag and version, the model class and constructor arguments (``init``), the
width attributes of submodules that pruning narrowed (``widths``), the state dict (weights, biases, BatchNorm
statistics, per-branch input index buffers of a batched-pruned layer), ``training``, ``pruning_info`` if
present, and ``sha256``: the SHA-256 of a canonical encoding of every other entry (tensors by dtype, shape and
bytes). A changed byte anywhere in the file either breaks the archive, or changes the content and fails the
checksum, or leaves the content exactly as saved.

``load`` trusts nothing in the file before checking it. In order: the archive (stored entries only, sizes within
the file), the header, the checksum, then the whole configuration (types, bounds, names from fixed sets, a layer
count the stored tensors cover) before a model is constructed, on the meta device (no memory for weights).
The stored tensors are then installed by name into parameters and buffers the model registered, and the result
is checked for consistency (every linear / norm / branch shape, index buffer ranges, a forward pass on a 2-node
graph) before it is moved to ``map_location``.

Version 1 files (no checksum) are refused unless ``load(..., allow_unverified=True)`` is given, which loads them
(with every check but the checksum) and warns; save them again to add the checksum.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import os
import re
import struct
import warnings
import zipfile
from typing import Union

import torch
from torch import nn

FORMAT = "gnnaccel-model"
VERSION = 2
LEGACY_VERSIONS = (1,)
_WIDTH_ATTRS = ("in_channels", "out_channels", "self_channels", "in_features", "out_features", "num_features")
_PAYLOAD_KEYS = frozenset({"format", "version", "class", "init", "widths", "state_dict", "training",
                           "pruning_info", "sha256"})
_REQUIRED_KEYS = ("class", "init", "widths", "state_dict")
_BASE_INIT = ("in_channels", "hidden_channels", "out_channels", "num_layers", "dropout", "act", "norm")
_MODEL_OPTIONS = {"act_first": False, "jk": None}  # model constructor options beyond _BASE_INIT, with defaults
_NORM_NAMES = (None, "batchnorm", "batch_norm", "layernorm", "layer_norm")
_MAX_WIDTH = 2 ** 31 - 1
_MAX_DEPTH = 32  # nesting of containers in the payload (pruning_info is the deepest: a few levels)
_CONV_KEY = re.compile(r"convs\.(\d+)\.")

PathLike = Union[str, os.PathLike]


class ModelFileError(ValueError):
    """A model file that is not a readable, intact, self-consistent gnnaccel model (a ``ValueError``)."""


def _model_classes():
    from .models import GAT, GCN, GraphSAGE, SAINTGraphSAGE

    return {"GraphSAGE": GraphSAGE, "GCN": GCN, "SAINTGraphSAGE": SAINTGraphSAGE, "GAT": GAT}


# Conv arguments that a model sets per layer or from its own arguments, not through conv_kwargs: GAT passes its
# dropout to every conv and concatenates the heads of its hidden layers only (see _model_level_kwargs).
_NOT_CONV_KWARGS = {"GAT": ("dropout", "concat")}


def _activation_names():
    from .nn.conv import _ACTIVATIONS

    return _ACTIVATIONS


def _activation_name(act) -> object:
    acts = _activation_names()
    if act is None:
        return None
    for name, fn in acts.items():
        if fn is act and name is not None:
            return name
    raise ValueError(f"cannot save a model with a custom activation {act!r}; use one of "
                     f"{[k for k, v in acts.items() if v is not None]}")


# ------------------------------------------------------------------------------------------------ checksum
def _digest(payload: dict, budget: int) -> str:
    """SHA-256 of a canonical, type-tagged encoding of ``payload`` without its ``sha256`` entry. ``budget``
    bounds the number of objects visited (a pickle can share one list many times: no exponential walk)."""
    h = hashlib.sha256()
    left = [budget]

    def feed(obj, depth):
        left[0] -= 1
        if left[0] < 0:
            raise ModelFileError("the payload holds more objects than its size allows (shared references?)")
        if depth > _MAX_DEPTH:
            raise ModelFileError(f"the payload is nested more than {_MAX_DEPTH} levels deep")
        if obj is None:
            h.update(b"N")
        elif isinstance(obj, bool):
            h.update(b"T" if obj else b"F")
        elif isinstance(obj, int):
            s = format(obj, "x").encode()  # hex: no limit on the digits of huge ints
            h.update(b"i%d:" % len(s) + s)
        elif isinstance(obj, float):
            h.update(b"f" + struct.pack("<d", obj))
        elif isinstance(obj, str):
            s = obj.encode("utf-8", "surrogatepass")
            h.update(b"s%d:" % len(s) + s)
        elif isinstance(obj, (list, tuple)):
            h.update(b"%s%d:" % (b"l" if isinstance(obj, list) else b"t", len(obj)))
            for item in obj:
                feed(item, depth + 1)
        elif isinstance(obj, dict):
            h.update(b"d%d:" % len(obj))
            for k, v in obj.items():
                feed(k, depth + 1)
                feed(v, depth + 1)
        elif isinstance(obj, torch.Tensor):
            if obj.layout != torch.strided or obj.is_quantized or obj.device.type == "meta":
                raise ModelFileError(f"cannot checksum a {obj.layout} / {obj.device.type} tensor")
            head = f"{obj.dtype}|{tuple(obj.shape)}".encode()
            h.update(b"x%d:" % len(head) + head)
            data = obj.detach().cpu().contiguous().reshape(-1)
            if data.numel():
                h.update(data.view(torch.uint8).numpy())
        else:
            raise ModelFileError(f"unsupported object of type {type(obj).__name__} in the payload")

    feed({k: v for k, v in payload.items() if k != "sha256"}, 0)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------- save
def _conv_kwargs(model: nn.Module) -> dict:
    """The conv constructor arguments of a conv-stack model, read from its layers (a model converted from PyG
    or folded / pruned carries no ``conv_kwargs`` of its own that would say e.g. ``aggr="max"`` or
    ``bias=False``): each argument of the conv class that the layers expose as a plain attribute, and ``bias``
    as whether the layers have one. Raises ValueError when layers disagree."""
    kwargs = dict(getattr(model, "conv_kwargs", {}))
    conv_cls = getattr(type(model), "conv_class", None)
    if conv_cls is None:
        return kwargs
    skip = _NOT_CONV_KWARGS.get(type(model).__name__, ())
    for name in skip:
        kwargs.pop(name, None)
    for p in inspect.signature(conv_cls.__init__).parameters.values():
        if p.name in ("self", "in_channels", "out_channels") or p.name in skip or p.kind not in (
                p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        values = []
        for conv in model.convs:
            if not isinstance(conv, conv_cls):  # jk="last": the linear head (a Dense) is no conv of the stack
                continue
            if p.name == "bias":  # the layer's own bias where it has one (a GAT's linear part has an intercept)
                own = getattr(conv, "bias", ())
                values.append(own is not None if own is None or isinstance(own, torch.Tensor)
                              else conv.linear_parts().bias is not None)
            elif isinstance(getattr(conv, p.name, ()), (bool, int, float, str)):
                values.append(getattr(conv, p.name))
        if values:
            if any(v != values[0] or type(v) is not type(values[0]) for v in values):
                raise ValueError(f"cannot save: the layers differ in {p.name} ({values})")
            kwargs[p.name] = values[0]
    kwargs.update(_model_level_kwargs(model))
    return kwargs


def _model_level_kwargs(model: nn.Module) -> dict:
    """GAT's ``concat``: that of its hidden convs (the output conv averages its heads; PyG's rule)."""
    if type(model).__name__ != "GAT":
        return {}
    hidden = [c for i, c in enumerate(model.convs)
              if isinstance(c, type(model).conv_class) and (i < len(model.convs) - 1 or model.jk is not None)]
    return {"concat": hidden[0].concat if hidden else True}


def _check_conv_options(model: nn.Module, fresh_model: nn.Module, init: dict) -> None:
    """Every option of every conv (the constructor arguments it keeps as plain attributes, and a GAT's
    per-head width) equals that of the conv ``type(model)(**init)`` builds: otherwise the file would load as a
    different model."""
    for i, (conv, fresh) in enumerate(zip(model.convs, fresh_model.convs)):
        if type(conv) is not type(fresh):
            raise ValueError(f"cannot save this {type(model).__name__}: convs.{i} is a {type(conv).__name__}, "
                             f"{type(model).__name__}(**{init}) builds a {type(fresh).__name__}")
        names = [p.name for p in inspect.signature(type(conv).__init__).parameters.values()
                 if p.name not in ("self", "in_channels", "out_channels")] + ["head_channels"]
        for name in names:
            mine, built = getattr(conv, name, None), getattr(fresh, name, None)
            if name not in _WIDTH_ATTRS and isinstance(mine, (bool, int, float, str)) and (
                    mine != built or type(mine) is not type(built)):
                raise ValueError(f"cannot save this {type(model).__name__}: convs.{i}.{name} = {mine!r} but "
                                 f"{type(model).__name__}(**{init}) builds {built!r}")


def save(model: nn.Module, path: PathLike) -> None:
    """Write a gnnaccel model to a file.

    Args:
        model: a gnnaccel GraphSAGE / GCN / SAINTGraphSAGE, pruned or not, on any device but meta; or a PyG
            GraphSAGE / GCN (converted with :func:`gnnaccel.from_pyg`, so eval-mode behaviour is saved).
        path: the file to write (overwritten).
    """
    from .models import as_model

    model = as_model(model)
    classes = _model_classes()
    cls_name = type(model).__name__
    if classes.get(cls_name) is not type(model):
        raise TypeError(f"save supports gnnaccel {sorted(classes)} models, got {type(model).__module__}.{cls_name}")
    norm = ("batchnorm" if any(isinstance(n, nn.BatchNorm1d) for n in model.norms)
            else "layernorm" if any(isinstance(n, nn.LayerNorm) for n in model.norms) else None)
    init = {"in_channels": model.in_channels, "hidden_channels": model.hidden_channels,
            "out_channels": model.out_channels, "num_layers": model.num_layers, "dropout": model.dropout,
            "act": _activation_name(model.act), "norm": norm}
    for name, default in _MODEL_OPTIONS.items():  # recorded only when set: older readers see the same init
        if getattr(model, name, default) != default:
            init[name] = getattr(model, name)
    init.update(_conv_kwargs(model))
    # Only widths that differ from a freshly constructed model's (pruning narrows layers).
    with torch.device("meta"):
        fresh_model = type(model)(**init)
    fresh = dict(fresh_model.named_modules())
    if len(fresh_model.convs) != len(model.convs):
        raise ValueError(f"cannot save this {cls_name}: it has {len(model.convs)} layers, {cls_name}(**{init}) "
                         f"builds {len(fresh_model.convs)}")
    _check_conv_options(model, fresh_model, init)
    own, built = set(model.state_dict()), set(fresh_model.state_dict())
    if not built <= own or any(k not in _optional_slots(fresh_model) for k in own - built):
        raise ValueError(f"cannot save this {cls_name}: its layers do not match what {cls_name}(**{init}) "
                         f"builds (missing {sorted(built - own)[:3]}, extra {sorted(own - built)[:3]})")
    widths = {}
    for mod_name, module in model.named_modules():
        attrs = {a: getattr(module, a) for a in _WIDTH_ATTRS
                 if _is_int(getattr(module, a, None)) and mod_name in fresh
                 and getattr(fresh[mod_name], a, None) != getattr(module, a)}
        if attrs:
            widths[mod_name] = attrs
    state = {}
    for k, v in model.state_dict().items():
        if v.device.type == "meta":
            raise ValueError(f"cannot save a model on the meta device ({k} has no data)")
        state[k] = v.detach().cpu().clone()
    payload = {"format": FORMAT, "version": VERSION, "class": cls_name, "init": init, "widths": widths,
               "state_dict": state, "training": bool(model.training),
               "pruning_info": getattr(model, "pruning_info", None)}
    payload["sha256"] = _digest(payload, budget=1 << 62)
    torch.save(payload, os.fspath(path))


def _optional_slots(model: nn.Module) -> set:
    """Names of the parameters and buffers a model registers empty (None) and fills when pruned or folded
    (per-branch input indices, a GAT's explicit logit projections, intercept and channel heads)."""
    return {f"{m}.{k}" if m else k for m, module in model.named_modules()
            for k, v in list(module._parameters.items()) + list(module._buffers.items()) if v is None}


# ---------------------------------------------------------------------------------------------------- load
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_archive(path: str, size: int) -> None:
    """The archive must be what torch.save writes: uncompressed entries whose sizes fit in the file (so that
    reading it cannot allocate more than the file's size)."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except Exception as exc:  # BadZipFile, NotImplementedError (zip version), OSError, ...
        raise ModelFileError(f"{path!r} is not a gnnaccel model file (not a readable torch.save archive: "
                             f"{exc})") from exc
    total = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise ModelFileError(f"{path!r}: archive entry {info.filename!r} is compressed; torch.save writes "
                                 "stored entries only")
        total += info.file_size
    if total > size:
        raise ModelFileError(f"{path!r}: the archive's entries claim {total} bytes, more than the file's {size}")


def _target_device(map_location) -> torch.device:
    if map_location is None:
        return torch.device("cpu")
    if isinstance(map_location, (str, torch.device)):
        try:
            return torch.device(map_location)
        except RuntimeError as exc:
            raise ValueError(f"map_location: {exc}") from exc
    raise TypeError(f"map_location must be None, a device string or a torch.device, got "
                    f"{type(map_location).__name__}")


def _check_header(payload, path: str, allow_unverified: bool) -> None:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path!r} is not a gnnaccel model file (no {FORMAT!r} format tag)")
    version = payload.get("version")
    if version != VERSION and version not in LEGACY_VERSIONS:
        raise ModelFileError(f"{path!r} has gnnaccel model format version {version!r}; this gnnaccel reads "
                             f"version {VERSION} (and {list(LEGACY_VERSIONS)} with allow_unverified=True)")
    unknown = sorted(map(str, set(payload) - _PAYLOAD_KEYS))
    if unknown:
        raise ModelFileError(f"{path!r} holds unknown entries {unknown}")
    missing = [k for k in _REQUIRED_KEYS if k not in payload]
    if missing:
        raise ModelFileError(f"{path!r} is missing {missing}")
    budget = 64 + 4 * os.path.getsize(path)
    if version in LEGACY_VERSIONS:
        if "sha256" in payload:
            raise ModelFileError(f"{path!r}: a version {version} file cannot carry a checksum (damaged header?)")
        if not allow_unverified:
            raise ModelFileError(f"{path!r} is a version {version} gnnaccel model file, written without a "
                                 "checksum: its integrity cannot be verified. If you trust it, load it with "
                                 "gnnaccel.load(path, allow_unverified=True) and save it again.")
        warnings.warn(f"{path!r}: loading a version {version} model file without a checksum (integrity not "
                      "verified); save it again to add one", stacklevel=3)
        _digest(payload, budget)  # still bounds the structure and rejects unsupported objects
        return
    stored = payload.get("sha256")
    if not isinstance(stored, str):
        raise ModelFileError(f"{path!r} has no checksum (sha256)")
    if _digest(payload, budget) != stored:
        raise ModelFileError(f"{path!r} is corrupt: its content does not match its SHA-256 checksum")


def _check_init(cls, init, state_keys) -> dict:
    """Types, bounds and names of the constructor arguments, before anything is built."""
    if not isinstance(init, dict) or not all(isinstance(k, str) for k in init):
        raise ModelFileError("init must be a dict with str keys")
    conv_cls = getattr(cls, "conv_class", None)
    allowed = set(_BASE_INIT) | set(_MODEL_OPTIONS)
    if conv_cls is not None:
        params = inspect.signature(conv_cls.__init__).parameters.values()
        allowed |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {
            "self", "in_channels", "out_channels"}
    unknown = sorted(set(init) - allowed)
    if unknown:
        raise ModelFileError(f"init names unknown arguments {unknown} for {cls.__name__}")
    for name in ("in_channels", "hidden_channels", "out_channels", "num_layers"):
        v = init.get(name)
        if not _is_int(v) or not 1 <= v <= _MAX_WIDTH:
            raise ModelFileError(f"init[{name!r}] must be an int in [1, {_MAX_WIDTH}], got {v!r}")
    # Every layer stores at least one tensor: the layer count is bounded by what the file holds.
    convs = {int(m.group(1)) for m in map(_CONV_KEY.match, state_keys) if m}
    if init["num_layers"] > len(convs):
        raise ModelFileError(f"init['num_layers'] = {init['num_layers']} but the state dict holds weights of "
                             f"{len(convs)} layers")
    dropout = init.get("dropout", 0.0)
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise ModelFileError(f"init['dropout'] must be a number in [0, 1), got {dropout!r}")
    act = init.get("act", "relu")
    if act is not None and (not isinstance(act, str) or act not in _activation_names()):
        raise ModelFileError(f"init['act'] must be one of {[k for k in _activation_names() if k]} or None, "
                             f"got {act!r}")
    if init.get("norm") not in _NORM_NAMES:
        raise ModelFileError(f"init['norm'] must be one of {_NORM_NAMES}, got {init.get('norm')!r}")
    if not isinstance(init.get("act_first", False), bool):
        raise ModelFileError(f"init['act_first'] must be a bool, got {init.get('act_first')!r}")
    if init.get("jk") not in (None, "last"):
        raise ModelFileError(f"init['jk'] must be None or 'last', got {init.get('jk')!r}")
    for name in set(init) - set(_BASE_INIT):
        v = init[name]
        if not (v is None or isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 64)):
            raise ModelFileError(f"init[{name!r}] must be None, a bool, a number or a short str, got "
                                 f"{type(v).__name__}")
        if _is_int(v) and not -_MAX_WIDTH <= v <= _MAX_WIDTH:
            raise ModelFileError(f"init[{name!r}] = {v} is out of range")
        if isinstance(v, float) and not math.isfinite(v):
            raise ModelFileError(f"init[{name!r}] = {v} is not finite")
    return init


def _install(model: nn.Module, widths, state: dict) -> None:
    """Set the stored widths and tensors on a model built on the meta device, by registered names only."""
    modules = dict(model.named_modules())
    if not isinstance(widths, dict):
        raise ModelFileError("widths must be a dict")
    for mod_name, attrs in widths.items():
        if mod_name not in modules:
            raise ModelFileError(f"widths names a submodule {mod_name!r} the model does not have")
        if not isinstance(attrs, dict):
            raise ModelFileError(f"widths[{mod_name!r}] must be a dict")
        module = modules[mod_name]
        for a, v in attrs.items():
            if a not in _WIDTH_ATTRS or not _is_int(getattr(module, a, None)):
                raise ModelFileError(f"widths[{mod_name!r}] names {a!r}, not a width attribute of "
                                     f"{type(module).__name__} (allowed: {list(_WIDTH_ATTRS)})")
            if not _is_int(v) or not 0 <= v <= getattr(module, a):
                raise ModelFileError(f"widths[{mod_name!r}][{a!r}] must be an int in [0, {getattr(module, a)}] "
                                     f"(pruning only narrows a layer), got {v!r}")
            setattr(module, a, v)
    for key, value in state.items():
        module_path, _, attr = key.rpartition(".")
        module = modules.get(module_path)
        if module is None:
            raise ModelFileError(f"state dict key {key!r}: no submodule {module_path!r}")
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            raise ModelFileError(f"state dict entry {key!r} is not a dense tensor")
        if attr in module._parameters:
            if not value.is_floating_point():
                raise ModelFileError(f"parameter {key!r} has dtype {value.dtype}; parameters are floating point")
            module._parameters[attr] = nn.Parameter(value, requires_grad=True)
        elif attr in module._buffers:
            fresh = module._buffers[attr]
            if fresh is None:  # a registered optional buffer (per-branch input index): int64 1-D
                if value.dtype != torch.int64 or value.dim() != 1:
                    raise ModelFileError(f"buffer {key!r} must be a 1-D int64 index, got {value.dtype} "
                                         f"{list(value.shape)}")
            elif fresh.is_floating_point() != value.is_floating_point() or (
                    not fresh.is_floating_point() and fresh.dtype != value.dtype):
                raise ModelFileError(f"buffer {key!r} has dtype {value.dtype}, expected {fresh.dtype}")
            module._buffers[attr] = value
        else:
            raise ModelFileError(f"state dict key {key!r} names no parameter or buffer of "
                                 f"{type(module).__name__}")
    own = set(model.state_dict())
    if own != set(state):
        raise ModelFileError(f"the state dict lacks {sorted(own - set(state))[:5]}")
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.device.type == "meta":
            raise ModelFileError(f"{name} was not stored in the file")


def _check_shapes(model: nn.Module) -> None:
    """Every stored tensor fits the widths the model now declares."""
    def expect(name, t, shape):
        if t is not None and tuple(t.shape) != tuple(shape):
            raise ModelFileError(f"{name} has shape {list(t.shape)}, expected {list(shape)}")

    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            expect(f"{name}.weight", m.weight, (m.out_features, m.in_features))
            expect(f"{name}.bias", m.bias, (m.out_features,))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            for attr in ("weight", "bias", "running_mean", "running_var"):
                expect(f"{name}.{attr}", getattr(m, attr), (m.num_features,))
            expect(f"{name}.num_batches_tracked", m.num_batches_tracked, ())
    convs, norms = model.convs, model.norms
    if len(norms) != len(convs):
        raise ModelFileError(f"{len(convs)} layers but {len(norms)} norms")
    for i, conv in enumerate(convs):
        if type(conv).__name__ == "GATConv":
            _check_gat(f"convs.{i}", conv)
        parts = conv.linear_parts()
        # A layer's linear part writes its outputs, or (attention) intermediate columns of its own count.
        layer_outputs = parts.extra.get("outputs_are_layer_outputs", True)
        if parts.in_channels != conv.in_channels or (layer_outputs and parts.out_channels != conv.out_channels):
            raise ModelFileError(f"convs.{i}: widths disagree with its weights")
        index = parts.extra.get("input_index", {})
        for b in parts.branches:
            idx = index.get(b.name)
            rows = conv.in_channels if idx is None else idx.numel()
            if b.weight.dim() != 2 or tuple(b.weight.shape) != (rows, b.cols.numel()):
                raise ModelFileError(f"convs.{i} branch {b.name!r}: weight {list(b.weight.shape)} does not fit "
                                     f"{rows} inputs x {b.cols.numel()} outputs")
            if b.cols.numel() and (int(b.cols.min()) < 0 or int(b.cols.max()) >= parts.out_channels):
                raise ModelFileError(f"convs.{i} branch {b.name!r} writes outside its {parts.out_channels} outputs")
            if idx is not None and idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= conv.in_channels
                                                    or torch.unique(idx).numel() != idx.numel()):
                raise ModelFileError(f"convs.{i}: input index of branch {b.name!r} is not a set of distinct "
                                     f"channels in [0, {conv.in_channels})")
        if parts.bias is not None:
            expect(f"convs.{i} bias", parts.bias, (parts.out_channels,))
        if i + 1 < len(convs) and convs[i + 1].in_channels != conv.out_channels:
            raise ModelFileError(f"convs.{i + 1} reads {convs[i + 1].in_channels} channels but convs.{i} writes "
                                 f"{conv.out_channels}")
        if isinstance(norms[i], nn.modules.batchnorm._BatchNorm) and norms[i].num_features != conv.out_channels:
            raise ModelFileError(f"norms.{i} has {norms[i].num_features} features, convs.{i} writes "
                                 f"{conv.out_channels}")


def _check_gat(name: str, conv) -> None:
    """A GATConv's attention tensors fit its heads, value channels and widths (before any forward reads them)."""
    h, d = conv.heads, conv.value_channels
    if conv.concat and d != conv.out_channels:
        raise ModelFileError(f"{name}: {d} value channels but {conv.out_channels} concatenated outputs")
    if not conv.concat and d != h * conv.out_channels:
        raise ModelFileError(f"{name}: {d} value channels, expected heads x outputs = {h} x {conv.out_channels}")
    for attr in ("att_src", "att_dst"):
        if tuple(getattr(conv, attr).shape) != (1, h, conv.head_channels):
            raise ModelFileError(f"{name}.{attr} has shape {list(getattr(conv, attr).shape)}, expected "
                                 f"[1, {h}, {conv.head_channels}]")
    if (conv.lin_att_src is None) != (conv.lin_att_dst is None):
        raise ModelFileError(f"{name}: lin_att_src and lin_att_dst must be stored together")
    if conv.lin_att_src is None and d != h * conv.head_channels:
        raise ModelFileError(f"{name}: {d} value channels no longer follow from att_src / att_dst "
                             f"({h} x {conv.head_channels}) but no explicit logit projections are stored")
    for attr, branch in (("lin_att_src", "neigh"), ("lin_att_dst", "self")):
        t = getattr(conv, attr)
        if t is not None and tuple(t.shape) != (h, conv._branch_width(branch)):
            raise ModelFileError(f"{name}.{attr} has shape {list(t.shape)}, expected "
                                 f"[{h}, {conv._branch_width(branch)}]")
    if conv.lin_bias is not None and tuple(conv.lin_bias.shape) != (d + 2 * h,):
        raise ModelFileError(f"{name}.lin_bias has shape {list(conv.lin_bias.shape)}, expected [{d + 2 * h}]")
    if conv.res is not None and conv.res.out_features != conv.out_channels:
        raise ModelFileError(f"{name}.res writes {conv.res.out_features} channels, the layer {conv.out_channels}")
    if conv.bias is not None and tuple(conv.bias.shape) != (conv.out_channels,):
        raise ModelFileError(f"{name}.bias has shape {list(conv.bias.shape)}, expected [{conv.out_channels}]")
    idx = conv.head_index
    if idx is None and d % h:
        raise ModelFileError(f"{name}: {d} value channels do not split into {h} heads and no head_index is stored")
    if idx is not None and (tuple(idx.shape) != (d,) or (d and (int(idx.min()) < 0 or int(idx.max()) >= h))):
        raise ModelFileError(f"{name}.head_index must hold the head (in [0, {h})) of each of the {d} value "
                             f"channels, got shape {list(idx.shape)}")


def _check_forward(model: nn.Module, stored_numel: int) -> None:
    """A forward pass on a 2-node graph (CPU, before moving): each layer checks its own arithmetic."""
    from .graph import Graph

    width = model.convs[0].in_channels
    if width > max(stored_numel, 1 << 16):
        raise ModelFileError(f"the model reads {width} input channels but the file stores only {stored_numel} "
                             "numbers")
    dtype = next(model.parameters()).dtype
    graph = Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), 2)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, width, dtype=dtype), graph)
    finally:
        model.train(was_training)
    if tuple(out.shape) != (2, model.convs[-1].out_channels):
        raise ModelFileError(f"a forward pass gives shape {list(out.shape)}, expected "
                             f"[2, {model.convs[-1].out_channels}]")


def load(path: PathLike, map_location=None, *, allow_unverified: bool = False) -> nn.Module:
    """Read a model written by :func:`save`.

    Args:
        path: the model file.
        map_location: device of the returned model (None = CPU; "meta" gives a model without data).
        allow_unverified: also load a version-1 file (no checksum), with a warning.

    Returns:
        The model, every parameter and buffer on ``map_location``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ModelFileError (a ValueError) naming the file: it is not a gnnaccel model, truncated, corrupt (checksum),
        or its configuration is out of bounds or does not fit its tensors.
    """
    path = os.fspath(path)
    device = _target_device(map_location)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such model file: {path!r}")
    _check_archive(path, os.path.getsize(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...
        raise ModelFileError(f"{path!r} is not a readable gnnaccel model file (truncated or foreign): "
                             f"{type(exc).__name__}: {exc}") from exc
    try:
        _check_header(payload, path, allow_unverified)
        classes = _model_classes()
        cls = classes.get(payload["class"]) if isinstance(payload["class"], str) else None
        if cls is None:
            raise ModelFileError(f"unknown model class {payload['class']!r} (expected one of {sorted(classes)})")
        state = payload["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise ModelFileError("state_dict must be a dict with str keys")
        init = _check_init(cls, payload["init"], state)
        training = payload.get("training", False)
        if not isinstance(training, bool):
            raise ModelFileError(f"training must be a bool, got {type(training).__name__}")
        try:
            with torch.device("meta"):
                model = cls(**init)
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"init does not construct a {cls.__name__}: {exc}") from exc
        _install(model, payload["widths"], state)
        _check_shapes(model)
        _check_forward(model, sum(t.numel() for t in state.values()))
    except ModelFileError as exc:
        if path in str(exc):
            raise
        raise ModelFileError(f"{path!r}: {exc}") from exc
    except Exception as exc:
        raise ModelFileError(f"{path!r}: the stored architecture and weights do not fit together "
                             f"({type(exc).__name__}: {exc})") from exc
    if payload.get("pruning_info") is not None:
        model.pruning_info = payload["pruning_info"]
    model.train(training)
    return model.to(device)

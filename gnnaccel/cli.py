"""Command line: ``python -m gnnaccel`` (``gnnaccel`` once installed).

Subcommands: ``demo`` (the end-to-end demo), ``info MODEL`` (architecture, widths, pruning, size), ``prune``
(a saved gnnaccel model or a PyG checkpoint + a graph file -> a pruned model file), ``bench`` (full-graph
inference of a model on a graph against PyG, in the same process, interleaved), ``serve`` (the HTTP service
of :mod:`gnnaccel.serving` over a batched engine; ``--features`` reads the features from a ``.pt`` / ``.npy``
file instead of the graph file) and ``spam`` (the YelpChi review-spam stream, :mod:`gnnaccel.apps.yelpchi`;
``spam serve`` serves its model over HTTP).

Graph files (``--graph``): a ``.pt`` file holding a dict (read with ``torch.load(weights_only=True)``) or a
``.npz`` file (read with ``numpy.load(allow_pickle=False)``), with ``edge_index`` (integers, shape [2, E], row 0
= source, row 1 = target, PyG's convention), ``x`` (float node features [N, F]) and optionally ``num_nodes``
(default N) and ``edge_weight`` ([E], float).

PyG checkpoints (``--pyg-model``): a file with the ``state_dict()`` of a ``torch_geometric.nn.models.GraphSAGE``
or ``GCN`` (read with ``weights_only=True``; a dict holding it under ``state_dict`` or ``model_state_dict`` is
accepted too), plus the constructor arguments on the command line (``--in --hidden --layers --out --norm``).
Nothing read by the command line can run code.

Exit status: 0 on success, 1 when an input is missing, unreadable or invalid (the message says which), 2 for
command-line usage errors.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Optional

import torch

PYG_MODELS = ("GraphSAGE", "GCN")


class InputError(Exception):
    """A user input (file, option value) that the command cannot use: reported without a traceback."""


# ------------------------------------------------------------------------------------------------ inputs
def _require_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise InputError(f"{what} {path!r} does not exist (or is not a file)")
    return path


def _torch_load_plain(path: str, what: str):
    """``torch.load(weights_only=True)`` of a file after the archive checks of :mod:`gnnaccel.serialize`."""
    from .serialize import _check_archive

    _require_file(path, what)
    try:
        _check_archive(path, os.path.getsize(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{what} {path!r} is not a readable torch.save file ({type(exc).__name__}: "
                         f"{exc})") from exc


def _load_plain(path: str, what: str, numpy_suffix: str):
    """A ``.pt`` file (:func:`_torch_load_plain`) or a numpy file with ``numpy_suffix`` (``numpy.load`` without
    pickles: a ``.npz`` as a dict of tensors, a ``.npy`` as a tensor)."""
    if path.endswith(".pt"):
        return _torch_load_plain(path, what)
    if not path.endswith(numpy_suffix):
        raise InputError(f"{what} {path!r}: expected a .pt or {numpy_suffix} file")
    import numpy as np

    _require_file(path, what)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.ndarray):
            with data:
                return {k: torch.from_numpy(np.array(data[k])) for k in data.files}
        return torch.from_numpy(np.array(data))
    except Exception as exc:
        raise InputError(f"{what} {path!r} is not a readable {numpy_suffix} file ({type(exc).__name__}: "
                         f"{exc})") from exc


def read_graph(path: str, x=None):
    """Read a graph file (format in the module docstring).

    Args:
        path: a ``.pt`` or ``.npz`` file.
        x: node features read from elsewhere (:func:`read_features`); the file must then not hold ``x``.

    Returns:
        ``(graph, x)``: a :class:`gnnaccel.Graph` and the float feature matrix.

    Raises:
        InputError naming the file and the problem.
    """
    from .graph import Graph

    content = _load_plain(path, "graph file", ".npz")
    if not isinstance(content, dict):
        raise InputError(f"graph file {path!r} must hold a dict with edge_index and x, got "
                         f"{type(content).__name__}")
    unknown = sorted(map(str, set(content) - {"edge_index", "x", "num_nodes", "edge_weight"}))
    missing = [k for k in ("edge_index", "x") if k not in content and (k != "x" or x is None)]
    if missing or unknown:
        raise InputError(f"graph file {path!r}: missing {missing}, unknown entries {unknown} (expected "
                         "edge_index, x, optional num_nodes and edge_weight)")
    if x is not None and "x" in content:
        raise InputError(f"graph file {path!r} holds features x and features were given separately: give one")
    x = content["x"] if x is None else x
    edge_index = content["edge_index"]
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise InputError(f"graph file {path!r}: x must be a 2-D float tensor [num_nodes, num_features]")
    num_nodes = content.get("num_nodes", x.shape[0])
    if isinstance(num_nodes, torch.Tensor) and num_nodes.numel() == 1 and not num_nodes.is_floating_point():
        num_nodes = int(num_nodes)
    if not isinstance(num_nodes, int) or isinstance(num_nodes, bool) or num_nodes != x.shape[0]:
        raise InputError(f"graph file {path!r}: num_nodes ({num_nodes!r}) must equal the rows of x "
                         f"({x.shape[0]})")
    if not isinstance(edge_index, torch.Tensor):
        raise InputError(f"graph file {path!r}: edge_index must be a tensor")
    weight = content.get("edge_weight")
    if weight is not None and not isinstance(weight, torch.Tensor):
        raise InputError(f"graph file {path!r}: edge_weight must be a tensor")
    try:
        graph = Graph.from_edge_index(edge_index, num_nodes, edge_weight=weight)
    except (ValueError, TypeError, IndexError) as exc:
        raise InputError(f"graph file {path!r}: {exc}") from exc
    return graph, x.contiguous()


def read_features(path: str, dtype: torch.dtype = None) -> torch.Tensor:
    """Read a node feature matrix: a ``.pt`` tensor (``torch.load(weights_only=True)``) or a ``.npy`` array
    (``numpy.load(allow_pickle=False)``).

    Args:
        path: the file.
        dtype: floating dtype to convert the features to (default: keep the file's).

    Returns:
        A 2-D float tensor [num_nodes, num_features].

    Raises:
        InputError naming the file and the problem.
    """
    x = _load_plain(path, "features file", ".npy")
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise InputError(f"features file {path!r} must hold a 2-D float tensor [num_nodes, num_features], got "
                         + (f"{x.dtype} of shape {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__))
    return _finite(x if dtype is None else x.to(dtype), f"features file {path!r}")


def _finite(x: torch.Tensor, what: str) -> torch.Tensor:
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{what} holds NaN or infinite values (in {x.dtype})")
    return x.contiguous()


def _pyg_checkpoint(args):
    """A gnnaccel model converted from a PyG GraphSAGE / GCN state dict and the command line's arguments."""
    try:
        from torch_geometric.nn import models as pyg_models
    except ImportError as exc:
        raise InputError("--pyg-model needs torch_geometric installed") from exc
    from .models import from_pyg

    for name in ("in_channels", "hidden", "layers", "out"):
        if getattr(args, name) is None:
            raise InputError(f"--pyg-model needs --{name.replace('_channels', '')}")
    state = _torch_load_plain(args.state_dict, "PyG state dict")
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise InputError(f"PyG state dict {args.state_dict!r} must map parameter names to tensors")
    cls = getattr(pyg_models, args.pyg_model)
    norm = None if args.norm == "none" else "batch_norm"
    pyg = cls(args.in_channels, args.hidden, args.layers, out_channels=args.out, norm=norm)
    try:
        pyg.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"PyG state dict {args.state_dict!r} does not fit {args.pyg_model}(in={args.in_channels}, "
                         f"hidden={args.hidden}, layers={args.layers}, out={args.out}, norm={args.norm}): "
                         f"{str(exc).splitlines()[0]} ...") from exc
    return from_pyg(pyg.eval())


def _source_model(args):
    from .serialize import load

    if (args.model is None) == (args.pyg_model is None):
        raise InputError("give exactly one of --model (a gnnaccel model file) or --pyg-model (with --state-dict)")
    if args.model is not None:
        _require_file(args.model, "model file")
        return load(args.model)
    if args.state_dict is None:
        raise InputError("--pyg-model needs --state-dict")
    return _pyg_checkpoint(args)


def _check_fits(model, x, graph_path: str) -> None:
    if x.shape[1] != model.in_channels:
        raise InputError(f"graph file {graph_path!r} has {x.shape[1]} features but the model reads "
                         f"{model.in_channels}")


# ------------------------------------------------------------------------------------------------ commands
def cmd_demo(args) -> None:
    from .demo import run_demo

    warnings.filterwarnings("ignore", message="Sparse")
    run_demo(args.nodes, args.degree, args.features, args.classes, args.hidden, args.epochs,
             progress=not args.no_progress and sys.stderr.isatty())


def cmd_info(args) -> None:
    from .serialize import load

    _require_file(args.model, "model file")
    model = load(args.model)
    info = getattr(model, "pruning_info", None)
    num_params = sum(p.numel() for p in model.parameters())
    size = os.path.getsize(args.model)
    print(f"{args.model}: gnnaccel {type(model).__name__}, {size:,} bytes on disk, {num_params:,} parameters "
          f"({'pruned' if info else 'not pruned'})")
    config = {"in": model.in_channels, "hidden": model.hidden_channels, "out": model.out_channels,
              "layers": model.num_layers, "dropout": model.dropout,
              "norm": sorted({type(n).__name__ for n in model.norms})}
    config.update(getattr(model, "conv_kwargs", {}))
    print("config: " + ", ".join(f"{k}={v}" for k, v in config.items()))
    if info:
        print(f"pruning: scheme {info.get('scheme')}, method {info.get('method')}, keep {info.get('keep')}, "
              f"calibrated on {info.get('calib_nodes')} nodes")
    layers = info.get("layers", []) if info else []
    print(f"{'layer':>5} {'type':>10} {'in':>6} {'out':>6} {'params':>10}  branches (input channels read)"
          f"{'  pruning' if info else ''}")
    for i, conv in enumerate(model.convs):
        parts = conv.linear_parts()
        index = parts.extra.get("input_index", {})
        branches = ", ".join(f"{b.name}/{b.propagation}:{b.weight.shape[0]}" +
                             (" (indexed)" if index.get(b.name) is not None else "") for b in parts.branches)
        params = sum(p.numel() for p in conv.parameters())
        line = f"{i:>5} {type(conv).__name__:>10} {conv.in_channels:>6} {conv.out_channels:>6} {params:>10,}  {branches}"
        li = layers[i] if i < len(layers) and isinstance(layers[i], dict) else None
        if li:
            err = li.get("output_rel_error")
            line += (f"  {li.get('method', '?')}: kept {li.get('k', '?')}/{li.get('in_channels', '?')}"
                     + (f", output rel. error {err:.4f}" if isinstance(err, float) else ""))
        print(line)


def cmd_prune(args) -> None:
    from .pruning.prune import prune
    from .serialize import save

    model = _source_model(args)
    graph, x = read_graph(_require_file(args.graph, "graph file"))
    _check_fits(model, x, args.graph)
    if os.path.exists(args.output) and not args.force:
        raise InputError(f"output {args.output!r} exists (use --force to overwrite)")
    try:
        pruned = prune(model, graph, x, keep=args.keep, scheme=args.scheme, method=args.method,
                       progress=not args.no_progress)
    except (ValueError, TypeError) as exc:
        raise InputError(f"cannot prune: {exc}") from exc
    save(pruned, args.output)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in pruned.parameters())
    print(f"wrote {args.output} ({os.path.getsize(args.output):,} bytes): {type(pruned).__name__}, "
          f"scheme {args.scheme}, method {args.method}, keep {args.keep}; parameters {before:,} -> {after:,}")
    print("layer widths (in -> out): " + ", ".join(f"{a.in_channels}->{a.out_channels} ({b.in_channels}->"
                                                   f"{b.out_channels})" for a, b in zip(model.convs, pruned.convs))
          + "  [unpruned in brackets]")


def _pyg_counterpart(model):
    """A PyG model of ``model``'s unpruned architecture; with its weights when they fit (an unpruned model)."""
    from torch_geometric.nn import models as pyg_models

    from .models import GCN, GraphSAGE

    kwargs = dict(getattr(model, "conv_kwargs", {}))
    if isinstance(model, GraphSAGE):
        cls = pyg_models.GraphSAGE
    elif isinstance(model, GCN):
        cls = pyg_models.GCN
    else:
        raise InputError(f"{type(model).__name__} has no PyG counterpart to compare with")
    norm = "batch_norm" if any(isinstance(n, torch.nn.BatchNorm1d) for n in model.norms) else None
    pyg = cls(model.in_channels, model.hidden_channels, model.num_layers, out_channels=model.out_channels,
              norm=norm, **kwargs).eval()
    # Same parameter names, except PyG's BatchNorm wrapper (``norms.i.module.*``); pruned shapes do not fit.
    target, mapped = pyg.state_dict(), {}
    for key, value in model.state_dict().items():
        head, _, attr = key.rpartition(".")
        name = key if key in target else f"{head}.module.{attr}"
        if name in target and target[name].shape == value.shape:
            mapped[name] = value
    same = set(mapped) == set(target)
    if same:
        pyg.load_state_dict(mapped)
    return pyg, same


def cmd_bench(args) -> None:
    from .inference import full_inference
    from .latency import format_speedup, interleaved_times, speedup, spread

    model = _source_model(args).eval()
    graph, x = read_graph(_require_file(args.graph, "graph file"))
    _check_fits(model, x, args.graph)
    try:
        pyg, same_weights = _pyg_counterpart(model)
    except ImportError as exc:
        raise InputError("bench compares with PyG: install torch_geometric") from exc
    adj_t = graph.to_torch_sparse()
    dtype = None if args.dtype is None else _DTYPES[args.dtype]

    def ours():
        return full_inference(model, graph, x, progress=False, dtype=dtype)

    def ref():
        with torch.inference_mode():
            return pyg(x, adj_t)

    if dtype is not None:
        try:
            ours()  # once, for a clear error (features beyond float16's range) before timing
        except ValueError as exc:
            raise InputError(f"cannot run in {args.dtype}: {exc}") from exc

    warnings.filterwarnings("ignore", message="Sparse")
    times = interleaved_times({"gnnaccel": ours, "pyg": ref}, rounds=args.rounds, warmup=args.warmup,
                              progress=not args.no_progress)
    ms = {k: spread(v * 1e3) for k, v in times.items()}
    pruned = bool(getattr(model, "pruning_info", None))
    print(f"{graph.num_nodes:,} nodes, {graph.num_edges:,} edges, {x.shape[1]} features; "
          f"{args.rounds} interleaved rounds after {args.warmup} warm-up calls each")
    precision = "" if args.dtype is None else f" {args.dtype}"
    for name, label in (("gnnaccel", f"gnnaccel {type(model).__name__}{' (pruned)' if pruned else ''}{precision}"),
                        ("pyg", f"PyG {type(pyg).__name__} (unpruned, torch.sparse CSR)")):
        s = ms[name]
        print(f"{label:>45}: {s['median']:9.2f} ms [{s['p25']:.2f}-{s['p75']:.2f}]")
    print(f"{'speedup (PyG / gnnaccel, per round)':>45}: {format_speedup(speedup(times['pyg'], times['gnnaccel']))}")
    if same_weights:
        diff = float((ours() - ref()).abs().max())
        print(f"same weights on both sides: max |output difference| {diff:.2e}")
    else:
        print("PyG runs the unpruned architecture with its own weights (cost does not depend on the values)")


def cmd_serve(args) -> None:
    from .batched import BatchedEngine
    from .serving import serve

    model = _source_model(args).eval()
    dtype = next(model.parameters(), torch.empty(0)).dtype
    x = None if args.features is None else read_features(args.features, dtype)
    graph, x = read_graph(_require_file(args.graph, "graph file"), x=x)
    _check_fits(model, x, args.graph)
    if args.features is None:
        x = _finite(x.to(dtype), f"graph file {args.graph!r}: x")
    try:
        engine = BatchedEngine(model, graph, x, fanouts=args.fanouts, cache=args.cache,
                               dtype=None if args.dtype is None else _DTYPES[args.dtype])
    except (ValueError, TypeError) as exc:
        raise InputError(f"cannot build the engine: {exc}") from exc
    try:
        serve(engine, args.host, args.port, max_body_bytes=args.max_body_bytes, max_batch=args.max_batch)
    except OSError as exc:
        raise InputError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc


# ------------------------------------------------------------------------------------------------- parser
def _version() -> str:
    from . import EXTENSION_LOADED, __version__

    return (f"gnnaccel {__version__} (torch {torch.__version__}, compiled extension "
            f"{'loaded' if EXTENSION_LOADED else 'not loaded'})")


def _add_source(p) -> None:
    p.add_argument("--model", metavar="MODEL.pt", help="a model file written by gnnaccel.save / `gnnaccel prune`")
    p.add_argument("--pyg-model", choices=PYG_MODELS,
                   help="instead of --model: the torch_geometric.nn.models class of a PyG checkpoint")
    p.add_argument("--state-dict", metavar="PATH", help="with --pyg-model: the PyG model's state_dict file")
    p.add_argument("--in", dest="in_channels", type=int, metavar="N", help="with --pyg-model: in_channels")
    p.add_argument("--hidden", type=int, metavar="N", help="with --pyg-model: hidden_channels")
    p.add_argument("--layers", type=int, metavar="N", help="with --pyg-model: num_layers")
    p.add_argument("--out", type=int, metavar="N", help="with --pyg-model: out_channels")
    p.add_argument("--norm", choices=("none", "batchnorm"), default="none",
                   help="with --pyg-model: the model's norm (default: none)")
    p.add_argument("--graph", required=True, metavar="GRAPH",
                   help="graph file: .pt dict or .npz with edge_index [2, E], x [N, F], optional num_nodes, "
                        "edge_weight")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def _keep(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"keep must be a number in (0, 1], got {value!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"keep must be in (0, 1], got {value}")
    return v


def _int_arg(value: str, lo: int, hi: Optional[int], what: str) -> int:
    """An int option value in ``[lo, hi]`` (``hi`` None: unbounded), else a usage error ``'<what>, got ...'``."""
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}, got {value!r}") from None
    if v < lo or (hi is not None and v > hi):
        raise argparse.ArgumentTypeError(f"{what}, got {v}")
    return v


def _positive(value: str) -> int:
    return _int_arg(value, 1, None, "expected a positive integer")


_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _add_dtype(p, what: str) -> None:
    p.add_argument("--dtype", choices=list(_DTYPES), default=None,
                   help=f"the dtype {what} (default: the model's); bfloat16 / float16 answer in float32")


def _fanout(value: str) -> Optional[int]:
    return None if value == "all" else _int_arg(value, 1, None, "a fanout is 'all' or an int >= 1")


def _cache(value: str):
    if value == "none":
        return None
    if value == "all":
        return True
    return _int_arg(value, 1, None, "cache is 'none', 'all' or a positive number of nodes")


def _port(value: str) -> int:
    return _int_arg(value, 0, 65535, "a port is an int in 0..65535")


def build_parser() -> argparse.ArgumentParser:
    """The command line's argument parser (every option carries help text)."""
    from .pruning.prune import METHODS, SCHEMES
    from .serving import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES

    parser = argparse.ArgumentParser(prog="gnnaccel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version(),
                        help="print gnnaccel's version, torch's and whether the extension loaded")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the end-to-end demo on a synthetic graph")
    demo.add_argument("--nodes", type=_positive, default=30_000, help="nodes of the synthetic graph")
    demo.add_argument("--degree", type=float, default=20.0, help="average degree of the synthetic graph")
    demo.add_argument("--features", type=_positive, default=128, help="node features")
    demo.add_argument("--classes", type=_positive, default=8, help="classes")
    demo.add_argument("--hidden", type=_positive, default=256, help="hidden width of the trained GraphSAGE")
    demo.add_argument("--epochs", type=_positive, default=30, help="maximum training epochs (early stopping)")
    demo.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    demo.set_defaults(func=cmd_demo)

    info = sub.add_parser("info", help="describe a saved model: architecture, widths, pruning, size")
    info.add_argument("model", metavar="MODEL", help="a model file written by gnnaccel.save / `gnnaccel prune`")
    info.set_defaults(func=cmd_info)

    prune = sub.add_parser("prune", help="prune a saved model or a PyG checkpoint on a graph, write a model file")
    _add_source(prune)
    prune.add_argument("--keep", type=_keep, default=0.25, help="ratio of input channels kept per layer "
                                                                "(default 0.25)")
    prune.add_argument("--scheme", choices=SCHEMES, default="full",
                       help="full: every layer, raw features kept; batched: per-branch first layer for the "
                            "batched engine (default full)")
    prune.add_argument("--method", choices=METHODS, default="auto", help="channel selection method "
                                                                         "(default auto)")
    prune.add_argument("-o", "--output", required=True, metavar="OUT.pt", help="the pruned model file to write")
    prune.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    prune.set_defaults(func=cmd_prune)

    bench = sub.add_parser("bench", help="time full-graph inference of a model on a graph against PyG")
    _add_source(bench)
    bench.add_argument("--rounds", type=_positive, default=10, help="timed rounds, gnnaccel and PyG "
                                                                    "interleaved (default 10)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed warm-up calls of each (default 2)")
    _add_dtype(bench, "gnnaccel's inference runs in")
    bench.set_defaults(func=cmd_bench)

    serve = sub.add_parser("serve", help="serve a model over HTTP (FastAPI + uvicorn): /predict, /nodes, /stats, "
                                          "/healthz on a growing graph")
    _add_source(serve)
    serve.add_argument("--features", metavar="X", help="node features, .pt tensor or .npy array [N, F] (then the "
                                                       "graph file holds no x); converted to the model's dtype")
    serve.add_argument("--fanouts", nargs="+", type=_fanout, metavar="K",
                       help="neighbours sampled per propagating layer ('all' = exact; default: exact everywhere)")
    serve.add_argument("--cache", type=_cache, default=None, metavar="N|all|none",
                       help="cache of hidden features: N nodes (LRU), all, or none (default none)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback)")
    serve.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000; 0 = a free one, printed)")
    serve.add_argument("--max-batch", type=_positive, default=DEFAULT_MAX_BATCH,
                       help=f"most node ids per /predict and new nodes per /nodes request (default {DEFAULT_MAX_BATCH})")
    serve.add_argument("--max-body-bytes", type=_positive, default=DEFAULT_MAX_BODY_BYTES,
                       help=f"largest request body accepted, larger ones get 413 (default {DEFAULT_MAX_BODY_BYTES})")
    _add_dtype(serve, "the engine stores features, hidden activations and cache values in")
    serve.set_defaults(func=cmd_serve)

    from .apps.yelpchi.cli import add_spam_parser

    add_spam_parser(sub)
    return parser


def main(argv=None) -> int:
    """Run the command line. Returns the exit status (0 ok, 1 bad input); argparse exits with 2 on usage
    errors."""
    from .serialize import ModelFileError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (InputError, ModelFileError, FileNotFoundError) as exc:
        print(f"gnnaccel {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prune to a target: per-layer keep ratios chosen from a cost model of full inference and each layer's
error-versus-keep curve (what :func:`gnnaccel.prune` does with ``target_speedup`` / ``max_logit_error`` /
``max_accuracy_drop``).

Cost model (:func:`layer_cost_counts`, :func:`predicted_seconds`). A layer of full inference over ``n`` nodes
and the ``E`` edges of its message graph, branch b reading ``c_b`` input channels and writing ``d_b`` outputs:
GEMM FLOPs ``sum_b 2 n c_b d_b`` (the same whether it projects first or aggregates first); aggregation: every
edge read once (index bytes) and ``E * w`` feature elements gathered, ``w = d_b`` when the layer projects first
and ``c_b`` when it aggregates first -- the layer's own decision, :func:`gnnaccel.nn.conv._projects_first`.
Seconds = FLOPs * s_flop + gathered bytes * s_byte + edges * s_edge + streamed bytes * s_stream + s_layer
(streamed: the layer's input read and its output written, biased and activated), the coefficients measured
once per process (and dtype / thread count) by :func:`calibrate_machine`'s micro-benchmark.

Error curves (:func:`error_curves`). Per pruned layer, from its second moment on the unpruned model's
activations: one greedy forward selection (:func:`~gnnaccel.pruning.select_greedy`'s) to the largest candidate
keep, recording after each added channel the error the least-squares refit leaves (in the metric of the next
layer's weights); the forward selection is nested, so one pass gives the whole curve.

The curves are then put in logit-error units (:func:`scale_curves`): each pruned layer is pruned alone at
keep :data:`SENSITIVITY_RATIO` (one prune per layer) and its measured squared relative logit error on the
calibration nodes, divided by the curve there, scales the whole curve (an error of a layer close to the input
passes through more layers before it reaches the logits).

Allocation (:func:`allocate`): the candidate keeps of every pruned layer (multiples of 1/32), every combination
enumerated when there are few (else greedy steps of the lowest error increase per cost saved); the
combination of least summed (scaled) squared error whose predicted cost is within the budget.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

# Candidate keep ratios of a pruned layer (the allocation picks one per layer).
CANDIDATE_RATIOS = tuple(i / 32 for i in range(32, 0, -1))
# Up to this many combinations of candidate keeps are enumerated exhaustively; beyond, greedy steps.
MAX_ENUMERATED = 40_000
# Keep ratio at which each layer's curve is scaled to the logit error it causes (one prune of that layer alone).
SENSITIVITY_RATIO = 0.25

_MACHINE: Dict[tuple, "MachineCost"] = {}


@dataclass(frozen=True)
class MachineCost:
    """Seconds per GEMM FLOP, per gathered feature byte, per edge (index read), per streamed byte (elementwise
    passes over a layer's input and output) and per layer call."""
    flop: float
    gathered_byte: float
    edge: float
    streamed_byte: float
    layer: float


def _median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def calibrate_machine(dtype: torch.dtype = torch.float32, refresh: bool = False) -> MachineCost:
    """The cost coefficients of this machine, measured once per process (per dtype and intra-op thread count)
    by a micro-benchmark of about a quarter second: a GEMM, the ``aggregate`` op at two widths on a random
    graph (per-edge and per-byte costs from the two), an elementwise pass (per streamed byte) and full
    inference of a tiny 2-layer GraphSAGE (per-layer overhead).

    Args:
        dtype: feature dtype of the inference the model predicts.
        refresh: measure again even if cached.

    Returns:
        :class:`MachineCost`.
    """
    from ..graph import Graph
    from ..ops import aggregate

    key = (dtype, torch.get_num_threads())
    if not refresh and key in _MACHINE:
        return _MACHINE[key]
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        a = torch.randn(2048, 256, generator=gen).to(dtype)
        b = torch.randn(256, 256, generator=gen).to(dtype)
        t_gemm = _median_time(lambda: a @ b, 5)
        flop = t_gemm / (2.0 * 2048 * 256 * 256)
        n, e = 8192, 131072
        ei = torch.randint(n, (2, e), generator=gen)
        g = Graph.from_edge_index(ei, n)
        narrow = torch.randn(n, 4, generator=gen).to(dtype)
        wide = torch.randn(n, 64, generator=gen).to(dtype)
        t_narrow = _median_time(lambda: aggregate(g.rowptr, g.col, narrow, "mean"), 5)
        t_wide = _median_time(lambda: aggregate(g.rowptr, g.col, wide, "mean"), 5)
        item = torch.empty((), dtype=dtype).element_size()
        gathered_byte = max(t_wide - t_narrow, 1e-12) / (e * (64 - 4) * item)
        edge = max(t_narrow - e * 4 * item * gathered_byte, 0.0) / e
        big = torch.randn(n, 256, generator=gen).to(dtype)
        streamed_byte = _median_time(lambda: torch.relu(big), 5) / (2.0 * big.numel() * item)
    # per-layer overhead: full inference of a tiny 2-layer GraphSAGE (Python, dispatch, allocations), per layer
    from ..inference import full_inference
    from ..models import GraphSAGE

    tiny = Graph.from_edge_index(torch.randint(16, (2, 32), generator=gen), 16)
    xt = torch.randn(16, 8, generator=gen).to(dtype)
    net = GraphSAGE(8, 8, 8, num_layers=2).to(dtype).eval()
    layer = _median_time(lambda: full_inference(net, tiny, xt, progress=False), 21) / 2
    cost = MachineCost(flop, gathered_byte, edge, streamed_byte, layer)
    _MACHINE[key] = cost
    return cost


@dataclass
class LayerCost:
    """What one layer of full inference does at given widths: GEMM FLOPs, gathered feature bytes, edges read,
    and per aggregating branch whether it projects first."""
    flops: float
    gathered_bytes: float
    edges: float
    streamed_bytes: float
    projects_first: Dict[str, bool]

    def seconds(self, machine: MachineCost) -> float:
        return (self.flops * machine.flop + self.gathered_bytes * machine.gathered_byte + self.edges * machine.edge
                + self.streamed_bytes * machine.streamed_byte + machine.layer)


@dataclass
class LayerShape:
    """The structure of one unpruned layer the cost model needs: branches (name, propagation, output columns),
    input and output width, and the edges of its message graph."""
    branches: List[Tuple[str, str, int]]
    in_channels: int
    out_channels: int
    num_nodes: int
    num_edges: int


def layer_shapes(model: nn.Module, graph, dtype: torch.dtype = torch.float32) -> List[LayerShape]:
    """:class:`LayerShape` of every layer of ``model`` (a gnnaccel model) on ``graph`` (a Graph)."""
    from ..nn.protocol import graph_block

    shapes = []
    for conv in model.convs:
        parts = conv.linear_parts()
        block = graph_block(conv, graph, dtype)
        shapes.append(LayerShape([(b.name, b.propagation, int(b.cols.numel())) for b in parts.branches],
                                 parts.in_channels, parts.out_channels, graph.num_nodes, int(block.num_edges)))
    return shapes


def layer_cost_counts(shape: LayerShape, in_widths: Dict[str, int], out_width: int, itemsize: int = 4) -> LayerCost:
    """:class:`LayerCost` of a layer of ``shape`` reading ``in_widths[branch]`` input channels per branch and
    writing ``out_width`` output channels (the next layer's kept inputs; each branch's share of the outputs
    scales with it in the concat form)."""
    from ..nn.conv import _projects_first

    flops = gathered = 0.0
    first = {}
    aggregating = False
    block = SimpleNamespace(num_edges=shape.num_edges)
    for name, propagation, cols in shape.branches:
        c = int(in_widths[name])
        d = max(1, int(round(cols * out_width / shape.out_channels))) if out_width < shape.out_channels else cols
        flops += 2.0 * shape.num_nodes * c * d
        if propagation == "identity":
            continue
        aggregating = True
        reduce = "sum" if propagation == "gcn" else propagation
        pf = _projects_first(c, d, block, shape.num_nodes, shape.num_nodes, reduce)
        first[name] = pf
        gathered += float(shape.num_edges) * (d if pf else c) * itemsize
    # elementwise passes: the input read once per branch, the output written, biased and activated
    widest_in = max(int(w) for w in in_widths.values())
    streamed = float(shape.num_nodes) * (widest_in + 3 * out_width) * itemsize
    return LayerCost(flops, gathered, float(shape.num_edges) if aggregating else 0.0, streamed, first)


def predicted_seconds(shapes: Sequence[LayerShape], kept: Sequence[Dict[str, int]], machine: MachineCost,
                      itemsize: int = 4) -> float:
    """Predicted seconds of full inference with ``kept[l][branch]`` input channels read by layer l (layer
    l - 1 then writes the widest of them: its kept outputs)."""
    total = 0.0
    for l, shape in enumerate(shapes):
        out = shape.out_channels if l + 1 == len(shapes) else max(kept[l + 1].values())
        total += layer_cost_counts(shape, kept[l], out, itemsize).seconds(machine)
    return total


def kept_widths(shapes: Sequence[LayerShape], ks: Sequence[int], scheme: str) -> List[Dict[str, int]]:
    """Per layer and branch the input channels read when layer l keeps ``ks[l]`` (per pruned branch); scheme
    ``"batched"`` keeps layer 0's self branch whole."""
    out = []
    for l, (shape, k) in enumerate(zip(shapes, ks)):
        names = [b[0] for b in shape.branches]
        whole = "self" if (l == 0 and scheme == "batched" and "self" in names and len(names) > 1) else None
        out.append({n: (shape.in_channels if n == whole else int(k)) for n in names})
    return out


@dataclass
class ErrorCurve:
    """One layer's squared relative refit error (in the next layer's metric) at each candidate kept count, and
    ``scale``: the squared relative logit error per unit of it (1 until :func:`scale_curves` measures it)."""
    layer: int
    ks: List[int]
    sq_error: List[float]
    scale: float = 1.0

    def at(self, k: int) -> float:
        """Predicted squared relative logit error of keeping ``k`` (a candidate)."""
        return self.scale * self.sq_error[self.ks.index(k)]


def scale_curves(curves: List[Optional[ErrorCurve]], logit_sq_error, ratio: float = SENSITIVITY_RATIO) -> None:
    """Scale every curve to logit-error units, in place: ``logit_sq_error(l, k)`` (the squared relative logit
    error of pruning layer ``l`` alone to ``k`` channels, measured) at the candidate nearest ``ratio``,
    divided by the curve there. A layer whose curve is 0 there keeps scale 1."""
    for cur in curves:
        if cur is None:
            continue
        c = max(cur.ks)
        k = min(cur.ks, key=lambda kk: (abs(kk - ratio * c), kk))
        predicted = cur.sq_error[cur.ks.index(k)]
        if predicted > 0:
            cur.scale = max(float(logit_sq_error(cur.layer, k)), 0.0) / predicted


def _curve_from_greedy(problem, kmax: int, ridge: float) -> List[float]:
    """Squared relative error the refit leaves after 0..kmax greedy forward steps (index = kept count)."""
    from .greedy import _GreedySelection

    B = len(problem.weights)
    kk = kmax if problem.keep_whole is None else kmax * (B - 1)
    sel = _GreedySelection(problem.S, problem.weights, kk, problem.form, problem.cols, problem.metric,
                           problem.keep_whole, ridge, 0)
    groups = sel.groups
    energy = sum(g.energy for g in groups)
    residual = sum(g.energy - g.fixed for g in groups)
    errors = [residual]
    chosen = torch.zeros(sel.num_units, dtype=torch.bool)
    with sel.threads():
        for _ in range(kk):
            gain = torch.zeros(sel.num_units, dtype=torch.float64)
            for state in groups:
                gain.index_add_(0, state.units.cpu(), state.gains().cpu())
            gain[chosen] = -math.inf
            u = int(torch.argmax(gain))
            chosen[u] = True
            residual = max(residual - float(gain[u]), 0.0)
            errors.append(residual)
            for state in groups:
                state.add(u)
    if problem.keep_whole is not None:  # kk steps for kmax per branch: sample every (B - 1)-th
        errors = errors[:: B - 1]
    return [e / energy if energy > 0 else 0.0 for e in errors]


def error_curves(model: nn.Module, graph, inputs: Sequence[Tensor], rows: Tensor, candidates: List[List[int]],
                 scheme: str, batch_size: int = 8192) -> List[Optional[ErrorCurve]]:
    """Per layer the :class:`ErrorCurve` at ``candidates[l]`` kept counts (None where the only candidate keeps
    everything). ``inputs[l]``: layer l's input in the unpruned model; ``rows``: calibration nodes."""
    from .prune import _calibrate

    curves = []
    for l, cand in enumerate(candidates):
        kmax = max((k for k in cand if k < model.convs[l].linear_parts().in_channels), default=None)
        if kmax is None:
            curves.append(None)
            continue
        problem = _calibrate(model, l, graph, inputs[l], rows, 0.5, scheme, 1, True, 1e-6, "next_layer", "greedy",
                             batch_size, False, 0)
        full = _curve_from_greedy(problem, kmax, 1e-6)
        curves.append(ErrorCurve(l, list(cand), [0.0 if k >= problem.c else full[k] for k in cand]))
    return curves


def candidate_counts(shapes: Sequence[LayerShape], scheme: str, min_kept: int,
                     ratios: Sequence[float] = CANDIDATE_RATIOS) -> List[List[int]]:
    """Candidate kept counts per layer, largest first (layer 0 keeps everything in scheme ``"full"``)."""
    out = []
    for l, shape in enumerate(shapes):
        c = shape.in_channels
        if l == 0 and (scheme == "full" or not any(b[0] == "self" for b in shape.branches)
                       or len(shape.branches) < 2):
            out.append([c])
            continue
        floor = min(c, min_kept)
        ks = sorted({max(floor, min(c, int(round(r * c)))) for r in ratios}, reverse=True)
        out.append(ks)
    return out


@dataclass
class Allocation:
    """Kept counts per layer, their predicted seconds and summed squared relative error."""
    ks: List[int]
    seconds: float
    error: float


def allocations(shapes, candidates, curves, machine, scheme: str, itemsize: int = 4) -> List[Allocation]:
    """Every combination of candidate counts (or, with more than :data:`MAX_ENUMERATED`, the greedy path from
    all kept down to all at their smallest), with predicted seconds and summed squared error."""
    def err(l, k):
        cur = curves[l]
        return 0.0 if cur is None else cur.at(k)

    def make(ks):
        return Allocation(list(ks), predicted_seconds(shapes, kept_widths(shapes, ks, scheme), machine, itemsize),
                          sum(err(l, k) for l, k in enumerate(ks)))

    total = math.prod(len(c) for c in candidates)
    if total <= MAX_ENUMERATED:
        return [make(ks) for ks in itertools.product(*candidates)]
    pos = [0] * len(candidates)
    current = make([c[0] for c in candidates])
    path = [current]
    while True:
        best = None
        for l, cand in enumerate(candidates):
            if pos[l] + 1 < len(cand):
                ks = list(current.ks)
                ks[l] = cand[pos[l] + 1]
                a = make(ks)
                saved = current.seconds - a.seconds
                score = (a.error - current.error) / saved if saved > 0 else math.inf
                if best is None or score < best[0]:
                    best = (score, l, a)
        if best is None:
            return path
        pos[best[1]] += 1
        current = best[2]
        path.append(current)


def pareto_front(allocs: Sequence[Allocation]) -> List[Allocation]:
    """The allocations no other beats on both predicted seconds and error, from the most expensive (least
    error) to the cheapest."""
    front = []
    for a in sorted(allocs, key=lambda a: (a.seconds, a.error)):
        if not front or a.error < front[-1].error:
            front.append(a)
    return front[::-1]


def allocate(allocs: Sequence[Allocation], budget_seconds: float) -> Allocation:
    """The allocation of least error whose predicted seconds are at most ``budget_seconds`` (the cheapest one
    if none fits)."""
    fit = [a for a in allocs if a.seconds <= budget_seconds * (1 + 1e-12)]
    if not fit:
        return min(allocs, key=lambda a: (a.seconds, a.error))
    return min(fit, key=lambda a: (a.error, a.seconds))


def uniform_allocation(shapes, candidates, machine, budget_seconds: float, scheme: str,
                       itemsize: int = 4) -> Allocation:
    """The baseline :func:`allocate` is compared with: one keep ratio for every pruned layer, the largest whose
    predicted seconds are at most ``budget_seconds`` (searched over every kept count of the widest pruned
    layer, not only the candidate grid; the others keep the same ratio). Its ``error`` is NaN (no curve is
    evaluated off the grid)."""
    pruned = [l for l, c in enumerate(candidates) if len(c) > 1]
    if not pruned:
        ks = [c[0] for c in candidates]
        return Allocation(ks, predicted_seconds(shapes, kept_widths(shapes, ks, scheme), machine, itemsize), 0.0)
    widest = max(shapes[l].in_channels for l in pruned)
    best = None
    for k in range(widest, 0, -1):
        ks = [c[0] for c in candidates]
        for l in pruned:
            ks[l] = max(1, int(round(k / widest * shapes[l].in_channels)))
        sec = predicted_seconds(shapes, kept_widths(shapes, ks, scheme), machine, itemsize)
        best = Allocation(ks, sec, math.nan)
        if sec <= budget_seconds:
            break
    return best


def _check_positive(name: str, value, upper: Optional[float] = None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if upper is not None and value > upper:
        raise ValueError(f"{name} must be at most {upper}, got {value!r}")
    return float(value)


@dataclass
class TargetPlan:
    """What :func:`plan` computes once per model: the shapes, candidates, curves, allocations and the
    unpruned model's predicted seconds."""
    shapes: List[LayerShape]
    candidates: List[List[int]]
    curves: List[Optional[ErrorCurve]]
    allocs: List[Allocation]
    machine: MachineCost
    base_seconds: float
    scheme: str

    def ratios(self, a: Allocation) -> List[float]:
        return [k / s.in_channels for k, s in zip(a.ks, self.shapes)]


def plan(model: nn.Module, graph, inputs: Sequence[Tensor], rows: Tensor, scheme: str, min_kept: int,
         batch_size: int = 8192, logit_sq_error=None) -> TargetPlan:
    """Cost model, error curves and the candidate allocations of ``model`` (a checked gnnaccel model).
    ``logit_sq_error(l, k)``: measured squared relative logit error of pruning layer l alone to k channels,
    to put the curves in logit-error units (:func:`scale_curves`); None leaves them as they are."""
    dtype = inputs[0].dtype
    shapes = layer_shapes(model, graph, dtype)
    machine = calibrate_machine(dtype)
    itemsize = inputs[0].element_size()
    candidates = candidate_counts(shapes, scheme, min_kept)
    curves = error_curves(model, graph, inputs, rows, candidates, scheme, batch_size)
    if logit_sq_error is not None and sum(c is not None for c in curves) > 1:
        scale_curves(curves, logit_sq_error)
    allocs = allocations(shapes, candidates, curves, machine, scheme, itemsize)
    base = predicted_seconds(shapes, kept_widths(shapes, [c[0] for c in candidates], scheme), machine, itemsize)
    return TargetPlan(shapes, candidates, curves, allocs, machine, base, scheme)


def prune_to_target(model: nn.Module, graph, x: Tensor, *, target_speedup=None, max_logit_error=None,
                    max_accuracy_drop=None, val_nodes=None, val_labels=None, scheme: str = "full",
                    calib_nodes=None, seed: int = 0, min_kept: Optional[int] = None, batch_size: int = 8192,
                    **prune_kwargs) -> nn.Module:
    """:func:`gnnaccel.prune` with a target instead of ``keep`` (exactly one of ``target_speedup``,
    ``max_logit_error``, ``max_accuracy_drop``); see there. Returns the pruned model, whose ``pruning_info``
    has a ``"target"`` entry: the kind and value, ``keep_per_layer``, ``predicted_speedup``, the predicted
    error (summed squared relative layer errors), and for the error targets the measured error of every
    allocation tried."""
    from ..inference import full_inference
    from ..nn.adjacency import as_graph
    from .prune import MIN_KEPT_CHANNELS, _as_gnnaccel_model, _calibration_rows, prune
    from .report import logit_relative_error

    given = {k: v for k, v in (("target_speedup", target_speedup), ("max_logit_error", max_logit_error),
                               ("max_accuracy_drop", max_accuracy_drop)) if v is not None}
    if len(given) != 1:
        raise ValueError(f"give exactly one of keep, target_speedup, max_logit_error, max_accuracy_drop; got "
                         f"{sorted(given) or 'none'}")
    (kind, value), = given.items()
    if kind == "target_speedup":
        value = _check_positive(kind, value)
        if value < 1:
            raise ValueError(f"target_speedup must be >= 1 (the unpruned model is 1), got {value}")
    else:
        value = _check_positive(kind, value, 1.0 if kind == "max_accuracy_drop" else None)
    if kind == "max_accuracy_drop":
        if val_nodes is None or val_labels is None:
            raise ValueError("max_accuracy_drop needs val_nodes and val_labels (validation nodes and their labels)")
    elif val_nodes is not None or val_labels is not None:
        raise ValueError(f"val_nodes / val_labels are only used with max_accuracy_drop, not with {kind}")
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a 2-D node feature tensor, got {getattr(x, 'shape', type(x).__name__)}")
    min_kept = MIN_KEPT_CHANNELS if min_kept is None else min_kept
    if isinstance(min_kept, bool) or not isinstance(min_kept, int) or min_kept < 1:
        raise ValueError(f"min_kept must be an int >= 1, got {min_kept!r}")
    base_model = _as_gnnaccel_model(model)
    g = as_graph(graph, x.shape[0])
    if g.num_nodes == 0:
        raise ValueError("prune needs a graph with at least one node (it calibrates on node features), got 0")
    rows = _calibration_rows(calib_nodes, g.num_nodes, x.device, seed)
    if kind == "max_accuracy_drop":
        val_nodes = _calibration_rows(val_nodes, g.num_nodes, x.device, seed)
        val_labels = torch.as_tensor(val_labels).to(x.device)
        if val_labels.shape[0] != val_nodes.numel():
            raise ValueError(f"val_labels has {val_labels.shape[0]} rows for {val_nodes.numel()} val_nodes")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("layer 0: input features x contain NaN or Inf")
    with torch.no_grad():
        inputs = [x]
        for i in range(len(base_model.convs) - 1):
            inputs.append(base_model.layer(i, inputs[-1], g))
    kwargs = dict(prune_kwargs, scheme=scheme, calib_nodes=calib_nodes, seed=seed, min_kept=1,
                  batch_size=batch_size)
    with torch.no_grad():
        base_out = full_inference(base_model, g, x, progress=False)

    def logit_sq_error(l: int, k: int) -> float:
        ratios = [1.0] * len(base_model.convs)
        ratios[l] = k / base_model.convs[l].linear_parts().in_channels
        with torch.no_grad():
            out = full_inference(prune(base_model, g, x, keep=ratios, **kwargs), g, x, progress=False)
        return logit_relative_error(base_out[rows], out[rows]) ** 2

    tp = plan(base_model, g, inputs, rows, scheme, min_kept, batch_size, logit_sq_error)

    def pruned_at(a: Allocation):
        return prune(base_model, g, x, keep=tp.ratios(a), **kwargs)

    record = {"kind": kind, "value": value, "tried": []}
    if kind == "target_speedup":
        chosen = allocate(tp.allocs, tp.base_seconds / value)
        result = pruned_at(chosen)
        if tp.base_seconds / chosen.seconds < value * (1 - 1e-9):
            record["reachable"] = False  # the cheapest candidate allocation is still above the budget
    else:
        from ..train import f1_micro

        def measure(m):
            with torch.no_grad():
                out = full_inference(m, g, x, progress=False)
            if kind == "max_logit_error":
                return logit_relative_error(base_out[rows], out[rows])
            return f1_micro(base_out[val_nodes], val_labels) - f1_micro(out[val_nodes], val_labels)

        front = pareto_front(tp.allocs)  # most expensive first; error grows along it
        lo, hi = 0, len(front) - 1  # invariant: front[lo] meets the bound (front[0] keeps every channel)
        chosen, result = front[0], None
        while lo < hi:  # binary search for the last (cheapest) allocation meeting the bound
            mid = (lo + hi + 1) // 2
            m = pruned_at(front[mid])
            err = measure(m)
            record["tried"].append({"keep_per_layer": tp.ratios(front[mid]), "measured": err,
                                    "predicted_speedup": tp.base_seconds / front[mid].seconds})
            if err <= value:
                lo, chosen, result = mid, front[mid], m
            else:
                hi = mid - 1
        if result is None:
            result = pruned_at(chosen)
            record["tried"].append({"keep_per_layer": tp.ratios(chosen), "measured": measure(result),
                                    "predicted_speedup": tp.base_seconds / chosen.seconds})
        record["measured"] = next(t["measured"] for t in reversed(record["tried"])
                                  if t["keep_per_layer"] == tp.ratios(chosen))
    record.update(keep_per_layer=tp.ratios(chosen), kept_per_layer=list(chosen.ks),
                  predicted_speedup=tp.base_seconds / chosen.seconds, predicted_error=chosen.error,
                  predicted_seconds=chosen.seconds, predicted_seconds_unpruned=tp.base_seconds,
                  curve_scale=[None if c is None else c.scale for c in tp.curves],
                  machine=asdict(tp.machine))
    result.pruning_info["target"] = record
    result.pruning_info["min_kept"] = min_kept
    return result


def measure_speedup(model: nn.Module, pruned: nn.Module, graph, x: Tensor, rounds: int = 15,
                    warmup: int = 2) -> dict:
    """Measured full-inference speedup of ``pruned`` over ``model`` in interleaved rounds
    (:func:`gnnaccel.latency.interleaved_times`), recorded in ``pruned.pruning_info["target"]["measured_speedup"]``
    when the pruning had a target.

    Returns:
        ``dict(median, p25, p75)`` of the per-round ratios.
    """
    from ..inference import full_inference
    from ..latency import interleaved_times, speedup

    times = interleaved_times({"unpruned": lambda: full_inference(model, graph, x, progress=False),
                               "pruned": lambda: full_inference(pruned, graph, x, progress=False)},
                              rounds=rounds, warmup=warmup)
    s = speedup(times["unpruned"], times["pruned"])
    info = getattr(pruned, "pruning_info", None)
    if isinstance(info, dict) and "target" in info:
        info["target"]["measured_speedup"] = s
    return s

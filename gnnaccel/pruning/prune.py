"""One-call channel pruning of a whole model (DESIGN.md section 3): calibrate, select, refit, layer by layer
from the output back to the input.

For layer l (input h_l, branches b with inputs Z_b = P_b h_l and weights W_b):

1. Calibration: S = Z'Z / n over the calibration nodes, streamed in row chunks through the layer's own
   ``branch_inputs(graph, h_l, rows=chunk)`` from the *unpruned* model's activations (memory O(c^2)).
2. Target: the layer's unpruned pre-activation output restricted to the output channels the next layer keeps
   (``prune_outputs(K_{l+1})`` has already removed the others; everything after it is per channel).
3. Selection of k = round(keep_l * c) input channels (LASSO path / greedy / random / magnitude). With
   ``objective="next_layer"`` (default) the LASSO and greedy measure the output error in the metric of the
   next layer's (already pruned and refit) weights: an error in an output channel the next layer barely
   reads costs little. Only the selection changes (the least-squares refit is the same in any metric).
4. Ridge least-squares refit of the kept rows from S, with an intercept (``fit_bias=True``, default, for
   layers that have a bias: moments about the calibration mean, and the bias absorbs the mean of what the
   dropped channels contributed), installed with ``load_pruned``; the previous layer then drops its output
   channels outside K_l.
5. Optionally (``refit="sequential"``) an error-compensating pass from input to output: each layer whose
   input changed is refit again from the pruned upstream model's activations (see :func:`prune`).

Schemes: ``"full"`` keeps the raw input features (layer 0 inputs untouched) and prunes every hidden width;
``"batched"`` additionally prunes the neighbour branch of layer 0 (raw features) while its self branch keeps
every feature: the LASSO runs in the per-branch layout with the self-branch coordinates unpenalised, so the
selection accounts for what the self branch can absorb in the refit. A first layer without a ``self`` branch
(GCN, SAGE with ``root_weight=False``) has nothing to keep whole: there ``"batched"`` equals ``"full"``.
"""
from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .gram import SecondMoment, _placed_weights, branch_penalty, gram_from_moments, split_branch_coordinates
from ._checks import all_finite
from .refit import about_mean, bias_shift, choose_ridge, output_relative_error, refit as refit_kept
from .baselines import select_magnitude, select_random
from .greedy import select_greedy, select_greedy_or_refined
from .lasso import select_channels

SCHEMES = ("full", "batched")
METHODS = ("auto", "lasso", "greedy", "random", "magnitude")
# method="auto": on a layer whose calibration rows number at least this many times the refit's regressors
# (the layer's kept input coordinates), the better (lower refit error on the calibration rows) of greedy and
# the LASSO selection refined by swaps; the plain LASSO path elsewhere. Greedy scores candidates by the
# refit's error on the calibration rows, which is a fair estimate of the error on other nodes only when the
# rows outnumber the regressors well; where they do not (the batched scheme's raw-feature layer on a small
# graph: Cora 1433 + 358 regressors for 1708 rows) it picks features that fit those rows, and the LASSO
# generalises better (the threshold's measurements: benchmarks/RESULTS.md, "Greedy selection on the refit's
# own error").
AUTO_GREEDY_ROWS_PER_REGRESSOR = 2
# Default floor of the kept channels of a pruned branch (prune's ``min_kept``): a layer with few input
# channels (raw features around ten, in the batched scheme) costs little to keep, and pruned to one or two
# channels it lost up to 0.03 ROC-AUC (benchmarks/RESULTS.md, "Narrow layers: a floor on the kept channels").
MIN_KEPT_CHANNELS = 8
REFITS = ("local", "sequential")
OBJECTIVES = ("next_layer", "layer")
RIDGE_FOLDS = 3  # cross-validation folds of the calibration rows for ridge="auto"
_PROTOCOL = ("linear_parts", "branch_inputs", "load_pruned", "prune_outputs")

KeepSpec = Union[float, Sequence[Optional[float]]]


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="rows", disable=not (enabled and sys.stderr.isatty()), leave=False)


def _as_gnnaccel_model(model: nn.Module) -> nn.Module:
    from ..models import as_model

    model = as_model(model)  # a PyG GraphSAGE / GCN: converted with from_pyg (then copied below, as ours are)
    if not hasattr(model, "convs") or not hasattr(model, "layer"):
        raise TypeError(f"prune expects a gnnaccel model (with .convs and .layer) or a PyG GraphSAGE/GCN, got "
                        f"{type(model).__name__}")
    model = copy.deepcopy(model).eval()
    for i, conv in enumerate(model.convs):
        missing = [m for m in _PROTOCOL if not hasattr(conv, m)]
        if missing:
            raise TypeError(f"layer {i} ({type(conv).__name__}) does not implement the pruning protocol "
                            f"(missing {', '.join(missing)}); supported layers: gnnaccel.nn SAGEConv, GCNConv, "
                            "SAINTConv, Dense")
    norms = getattr(model, "norms", None)
    if norms is not None and any(not isinstance(n, nn.Identity) for n in norms):
        if not hasattr(model, "fold_batchnorm"):
            raise TypeError("the model has norms but no fold_batchnorm()")
        model.fold_batchnorm()
    return model


def _keep_ratios(keep: KeepSpec, num_layers: int, scheme: str) -> List[float]:
    """Per layer ratio of kept input channels; layer 0 is 1.0 in scheme full."""
    if isinstance(keep, (int, float)) and not isinstance(keep, bool):
        ratios = [float(keep)] * num_layers
        if scheme == "full":
            ratios[0] = 1.0
    else:
        ratios = list(keep)
        if len(ratios) != num_layers:
            raise ValueError(f"keep has {len(ratios)} entries but the model has {num_layers} layers (one ratio of "
                             "kept input channels per layer; None = keep all)")
        ratios = [1.0 if r is None else r for r in ratios]
        if scheme == "full" and ratios[0] != 1.0:
            raise ValueError(f"scheme 'full' keeps the raw input features: keep[0] must be None or 1.0, got "
                             f"{ratios[0]} (use scheme='batched' to prune layer 0's neighbour branch)")
    for i, r in enumerate(ratios):
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (0.0 < float(r) <= 1.0):
            raise ValueError(f"keep ratio for layer {i} must be in (0, 1], got {r!r}")
    return [float(r) for r in ratios]


def _calibration_rows(calib_nodes, n: int, device, seed: int) -> Tensor:
    """Calibration node indices: None -> all nodes; int m -> m random nodes; bool mask [n]; index tensor."""
    if calib_nodes is None:
        return torch.arange(n, device=device)
    if isinstance(calib_nodes, bool):
        raise TypeError("calib_nodes must be None, an int sample size, a bool mask or an index tensor")
    if isinstance(calib_nodes, int):
        if not 0 < calib_nodes <= n:
            raise ValueError(f"calib_nodes sample size must be in [1, {n}], got {calib_nodes}")
        gen = torch.Generator().manual_seed(int(seed))
        return torch.sort(torch.randperm(n, generator=gen)[:calib_nodes]).values.to(device)
    rows = torch.as_tensor(calib_nodes)
    if rows.dtype == torch.bool:
        if rows.shape != (n,):
            raise ValueError(f"calib_nodes mask must have shape [{n}], got {list(rows.shape)}")
        rows = torch.nonzero(rows).flatten()
    else:
        if rows.is_floating_point() or rows.is_complex():
            raise TypeError(f"calib_nodes must hold integer node indices, got dtype {rows.dtype}")
        rows = rows.long().flatten()
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n):
            raise ValueError(f"calib_nodes holds node indices outside [0, {n}) (min {int(rows.min())}, "
                             f"max {int(rows.max())})")
    if rows.numel() == 0:
        raise ValueError("calib_nodes selects no node")
    return rows.to(device)


def layer_second_moment(conv: nn.Module, graph, h: Tensor, rows: Tensor, batch_size: int = 8192,
                        progress: bool = True, desc: str = "calibrate", with_mean: bool = False):
    """S = Z'Z / n of the stacked branch inputs (in the order of ``conv.linear_parts().branches``) over
    ``rows``, streamed ``batch_size`` rows at a time. float64 [B*c, B*c]; with ``with_mean`` the pair
    (S, column means of Z [B*c])."""
    names = [b.name for b in conv.linear_parts().branches]
    acc = None
    with torch.inference_mode(), _progress(rows.numel(), progress, desc) as bar:
        for start in range(0, rows.numel(), batch_size):
            chunk = rows[start:start + batch_size].to(graph.index_dtype)
            z = conv.branch_inputs(graph, h, rows=chunk)
            parts = [z[name] for name in names]
            if acc is None:
                acc = SecondMoment(sum(p.shape[1] for p in parts), device=h.device)
            acc.update(*parts)
            bar.update(chunk.numel())
    return (acc.moment, acc.mean) if with_mean else acc.moment


def _pooled(folds: List[tuple]) -> tuple:
    """Row-count weighted means of per-fold statistics: folds are (n_f, stat_1, stat_2, ...)."""
    n = sum(f[0] for f in folds)
    return tuple(sum(f[0] * f[j] for f in folds) / n for j in range(1, len(folds[0])))


def _next_layer_metric(convs, l: int, d: int) -> Optional[Tensor]:
    """[d, m]: the branch weights of layer l + 1 side by side, rows = the d outputs of layer l it reads,
    scaled to a mean squared row norm of 1 (the LASSO's scale stays that of the plain objective). None for
    the last layer and for a next layer whose weights are all zero."""
    if l + 1 >= len(convs):
        return None
    M = torch.cat([b.weight.detach().double().cpu() for b in convs[l + 1].linear_parts().branches], dim=1)
    if M.shape[0] != d:
        raise RuntimeError(f"layer {l + 1} reads {M.shape[0]} input channels but layer {l} has {d} outputs")
    energy = float((M * M).sum())
    return None if energy == 0 else M * (d / energy) ** 0.5


@dataclass
class LayerProblem:
    """One layer's pruning problem, built once by :func:`_calibrate` and read by selection, refit and install.

    ``S``: second moment of the stacked branch inputs over the calibration rows (about their mean when the
    refit has an intercept), ``S_raw`` the raw one, ``mean`` the column means; ``weights`` [c, d_b] and
    ``cols`` (output columns) per branch, ``form``; ``keep_whole``: the branch kept whole (the batched
    scheme's self branch on layer 0) or None; ``k``: kept channels per selected branch (the budget);
    ``metric``: the next layer's weights the selection measures the output error in (objective
    "next_layer"), or None; ``layer_method``: the selection this layer runs; ``fold_S``: per-fold moments
    for ``ridge="auto"``; ``info``: the layer's ``pruning_info`` entry, filled in as the steps run."""
    index: int
    conv: nn.Module
    names: List[str]
    c: int
    k: int
    form: str
    keep_whole: Optional[int]
    fit_bias: bool
    info: dict
    S: Optional[Tensor] = None
    S_raw: Optional[Tensor] = None
    mean: Optional[Tensor] = None
    weights: Optional[List[Tensor]] = None
    cols: Optional[List[Tensor]] = None
    metric: Optional[Tensor] = None
    layer_method: Optional[str] = None
    fold_S: Optional[list] = None
    bias: Optional[Tensor] = None


def _layer_progress(num_layers: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=num_layers, desc="prune", unit="layer", disable=not (enabled and sys.stderr.isatty()),
                leave=False)


def _budget(ratio: float, c: int, min_kept: int) -> Tuple[int, bool]:
    """Kept channels of a pruned branch: round(ratio * c), at least ``min_kept`` (and 1), at most c; and
    whether the floor raised it."""
    k = max(1, int(round(ratio * c)))
    floor = min(c, min_kept)
    return (floor, True) if k < floor else (k, False)


def _calibrate(model: nn.Module, l: int, g, h: Tensor, rows: Tensor, ratio: float, scheme: str, min_kept: int,
               fit_bias: bool, ridge, objective: str, method: str, batch_size: int, progress: bool,
               seed: int) -> LayerProblem:
    """Layer ``l``'s problem: budget, kept-whole branch, and (when something is pruned) the calibration
    moments, the weights, the selection method and the metric."""
    convs = model.convs
    conv = convs[l]
    parts = conv.linear_parts()
    names = [b.name for b in parts.branches]
    c = parts.in_channels
    keep_whole = None
    if l == 0 and scheme == "batched":
        if "self" in names and len(names) > 1:
            keep_whole = names.index("self")
        else:  # no self branch to keep whole (GCN): the raw features stay, as in scheme full
            ratio = 1.0
    k, floored = _budget(ratio, c, min_kept)
    layer_fits_bias = fit_bias and parts.bias is not None
    info = {"layer": l, "type": type(conv).__name__, "in_channels": c, "keep_ratio": ratio, "k": k,
            "k_floored": floored, "branches": names, "form": parts.form, "fit_bias": layer_fits_bias}
    problem = LayerProblem(l, conv, names, c, k, parts.form, keep_whole, layer_fits_bias, info)
    if k >= c:
        info.update(kept={n: torch.arange(c) for n in names}, output_rel_error=0.0)
        return problem
    name = f"layer {l} ({type(conv).__name__})"
    desc = f"calibrate layer {l + 1}/{len(convs)}"
    try:
        if ridge == "auto":
            stats = [(fr.numel(),) + tuple(t.cpu() for t in layer_second_moment(
                conv, g, h, fr, batch_size, progress, desc, with_mean=True)) for fr in _fold_rows(rows, seed)]
            S_raw, mean = _pooled(stats)
            problem.fold_S = [(n_f, about_mean(S_f, mean, mean, m_f, m_f) if layer_fits_bias else S_f)
                              for n_f, S_f, m_f in stats]
        else:
            S_raw, mean = (t.cpu() for t in layer_second_moment(conv, g, h, rows, batch_size, progress, desc,
                                                                with_mean=True))
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc
    # With an intercept everything below runs on the moment about the calibration mean.
    problem.S = about_mean(S_raw, mean, mean) if layer_fits_bias else S_raw
    problem.S_raw, problem.mean = S_raw, mean
    problem.weights = [b.weight.detach().double().cpu() for b in parts.branches]
    problem.cols = [b.cols.cpu() for b in parts.branches]
    problem.bias = None if parts.bias is None else parts.bias.detach().clone()
    layer_method = method
    if method == "auto":
        regressors = len(names) * k if keep_whole is None else c + (len(names) - 1) * k
        layer_method = "best" if rows.numel() >= AUTO_GREEDY_ROWS_PER_REGRESSOR * regressors else "lasso"
    problem.layer_method = layer_method
    # A layer whose linear outputs are not its outputs (attention: x W and the logit terms) has no next-layer
    # metric for them: its selection weighs every linear output alike.
    if (objective == "next_layer" and layer_method in ("lasso", "greedy", "best")
            and parts.extra.get("outputs_are_layer_outputs", True)):
        problem.metric = _next_layer_metric(convs, l, parts.out_channels)
    return problem


def _select_layer(problem: LayerProblem, method: str, seed: int, solver_kwargs: dict, ridge,
                  progress: bool) -> List[Tensor]:
    """Selection step: kept channels per branch; records the selection used in ``problem.info``."""
    greedy_ridge = float(ridge) if not isinstance(ridge, str) and ridge > 0 else 1e-6
    keeps = _select(problem.layer_method, problem.S, problem.weights, problem.form, problem.cols, problem.k, seed,
                    problem.keep_whole, solver_kwargs, problem.metric, greedy_ridge, problem.info, progress)
    problem.info["method"] = problem.info.pop("selection", problem.layer_method)
    return keeps


def _refit_layer(problem: LayerProblem, keeps: List[Tensor], ridge) -> Tuple[List[Tensor], Optional[Tensor]]:
    """Refit step: ridge least-squares weights of the kept channels (ridge chosen by cross-validation for
    ``ridge="auto"``) and the bias; records ridge and output error in ``problem.info``."""
    info = problem.info
    if ridge == "auto":
        ridge_l, info["ridge_cv"] = choose_ridge(problem.fold_S, keeps, problem.weights, problem.form, problem.cols)
    else:
        ridge_l = ridge
    info["ridge"] = ridge_l
    new_weights = refit_kept(problem.S, keeps, problem.weights, problem.form, ridge_l, problem.cols)
    info["output_rel_error"] = output_relative_error(problem.S, problem.weights, new_weights, keeps, problem.form,
                                                     problem.cols,
                                                     norm_moment=problem.S_raw if problem.fit_bias else None)
    bias = problem.bias
    if problem.fit_bias:
        bias = bias.double().cpu() + bias_shift(problem.mean, problem.weights, new_weights, keeps, problem.form,
                                                problem.cols)
    return new_weights, bias


def _install(model: nn.Module, problem: LayerProblem, keeps: List[Tensor], new_weights: List[Tensor],
             bias: Optional[Tensor]) -> None:
    """Install step: the smaller weights into the layer, the previous layer's outputs cut to the kept inputs."""
    names = problem.names
    problem.conv.load_pruned({n: kb for n, kb in zip(names, keeps)}, {n: w for n, w in zip(names, new_weights)},
                             bias)
    if problem.keep_whole is None and problem.index > 0:
        if hasattr(model, "prune_layer_outputs"):  # the conv and a BatchNorm kept after it (not foldable)
            model.prune_layer_outputs(problem.index - 1, keeps[0])
        else:
            model.convs[problem.index - 1].prune_outputs(keeps[0])
    problem.info["kept"] = {n: kb.clone() for n, kb in zip(names, keeps)}


def _select(method: str, S: Tensor, weights: List[Tensor], form: str, cols: List[Tensor], k: int,
            seed: int, self_branch: Optional[int], solver_kwargs, metric: Optional[Tensor] = None,
            ridge: float = 1e-6, record: Optional[dict] = None, progress: bool = False) -> List[Tensor]:
    """Kept input channels per branch. ``self_branch`` not None: batched layer 0, that branch keeps all.
    ``metric`` [d, m] (objective "next_layer"): the output error counts as the next layer reads it.
    ``"best"``: greedy, and the LASSO selection refined by the same swaps; the one leaving the lower refit
    error on the calibration rows (its name goes to ``record["selection"]``)."""
    B, c = len(weights), weights[0].shape[0]
    if method in ("greedy", "best"):
        if k >= c:
            return [torch.arange(c)] * B
        kk = k if self_branch is None else k * (B - 1)
        kw = dict(metric=metric, keep_whole=self_branch, ridge=ridge, progress=progress)
        if method == "greedy":
            return select_greedy(S, weights, kk, form, cols, **kw)
        lasso = _select("lasso", S, weights, form, cols, k, seed, self_branch, solver_kwargs, metric, ridge)
        keeps, lasso_won = select_greedy_or_refined(S, weights, kk, lasso, form, cols, **kw)
        if record is not None:
            record["selection"] = "lasso+swaps" if lasso_won else "greedy"
        return keeps
    if metric is not None:  # the LASSO's Gram in the metric: each branch's output mapped through it
        placed, _, _ = _placed_weights(weights, form, cols)
        weights, form, cols = [w @ metric for w in placed], "sum", None
    if self_branch is None:
        if k >= c:
            sel = torch.arange(c)
        elif method == "random":
            sel = select_random(c, k, seed)
        elif method == "magnitude":
            sel = select_magnitude(weights, k)
        else:
            G, q, y_sq = gram_from_moments(S, weights, form, "channel", cols)
            sel = select_channels(G, q, k, y_sq=y_sq, check_psd=False, **solver_kwargs)  # Gram: PSD
        return [sel] * B
    penalised = [b for b in range(B) if b != self_branch]
    if k >= c:
        sel_by_branch = {b: torch.arange(c) for b in penalised}
    elif method == "random":
        sel_by_branch = {b: select_random(c, k, seed + 7919 * b) for b in penalised}
    elif method == "magnitude":
        sel_by_branch = {b: select_magnitude(weights[b], k) for b in penalised}
    else:
        G, q, y_sq = gram_from_moments(S, weights, form, "branch", cols)
        penalty = branch_penalty(c, B, (self_branch,))
        kk = k * len(penalised)
        coords = select_channels(G, q, kk, penalty=penalty, y_sq=y_sq, check_psd=False, **solver_kwargs)
        split = split_branch_coordinates(coords, c, B)
        sel_by_branch = {b: split[b] for b in penalised}
    return [torch.arange(c) if b == self_branch else sel_by_branch[b] for b in range(B)]


def _output_keep(layers_info: List[dict], l: int, d: int) -> Tensor:
    """Output channels of layer ``l`` that the pruned model keeps: the next layer's kept inputs (same for every
    branch of a hidden layer), all ``d`` for the last layer."""
    if l + 1 >= len(layers_info):
        return torch.arange(d)
    nxt = layers_info[l + 1]
    return nxt["kept"][nxt["branches"][0]].cpu()


def _cross_moments(conv_new: nn.Module, conv_old: nn.Module, graph, h_new: Tensor, h_old: Tensor, rows: Tensor,
                   keeps: List[Tensor], names: List[str], c: int, batch_size: int, progress: bool, desc: str):
    """Second moment of the pruned layer's branch inputs (from the pruned upstream model, placed at their
    kept channels in the stacked [B*c] frame), their cross moment with the unpruned layer's branch inputs and
    the latter's own moment, streamed over ``rows``: (S_new, T, S_old), each / n, float64 [B*c, B*c], then
    the column means of both inputs (mean_new, mean_old) [B*c]."""
    B = len(names)
    dev = h_old.device
    S_new = torch.zeros(B * c, B * c, dtype=torch.float64, device=dev)
    T, S_old = torch.zeros_like(S_new), torch.zeros_like(S_new)
    sum_new = torch.zeros(B * c, dtype=torch.float64, device=dev)
    sum_old = torch.zeros_like(sum_new)
    placed = torch.cat([b * c + keeps[b].to(dev) for b in range(B)])
    with torch.inference_mode(), _progress(rows.numel(), progress, desc) as bar:
        for start in range(0, rows.numel(), batch_size):
            chunk = rows[start:start + batch_size].to(graph.index_dtype)
            zn, zo = conv_new.branch_inputs(graph, h_new, rows=chunk), conv_old.branch_inputs(graph, h_old, rows=chunk)
            z_new = torch.cat([zn[n] for n in names], 1).double()
            z_old = torch.cat([zo[n] for n in names], 1).double()
            if z_new.shape[1] != placed.numel() or z_old.shape[1] != B * c:
                raise RuntimeError(f"{desc}: branch inputs are {z_new.shape[1]} (pruned) / {z_old.shape[1]} "
                                   f"(unpruned) columns wide, expected {placed.numel()} / {B * c}")
            if not (all_finite(z_new) and all_finite(z_old)):
                raise ValueError(f"{desc}: NaN or Inf activations")
            S_new[placed.unsqueeze(1), placed.unsqueeze(0)] += z_new.T @ z_new
            T[placed] += z_new.T @ z_old
            S_old.addmm_(z_old.T, z_old)
            sum_new[placed] += z_new.sum(0)
            sum_old += z_old.sum(0)
            bar.update(chunk.numel())
    n = rows.numel()
    return S_new / n, T / n, S_old / n, sum_new / n, sum_old / n


def _fold_rows(rows: Tensor, seed: int) -> List[Tensor]:
    """The calibration rows split into RIDGE_FOLDS seeded random folds (each sorted)."""
    gen = torch.Generator().manual_seed(int(seed) + 104729)
    perm = torch.randperm(rows.numel(), generator=gen).to(rows.device)
    return [torch.sort(rows[perm[f::RIDGE_FOLDS]]).values for f in range(RIDGE_FOLDS)]


def _sequential_refit(model: nn.Module, original: nn.Module, graph, inputs: List[Tensor], rows: Tensor,
                      layers_info: List[dict], ridge, batch_size: int, progress: bool, seed: int) -> None:
    """Error-compensating refit, input to output: each layer whose input differs from the unpruned model's
    (some upstream layer was refit) is refit by ridge least squares from the *pruned* upstream model's
    activations to the unpruned layer's pre-activation output on the kept output channels:
    W' = (S'_JJ + ridge)^-1 (Z'_J'Z / n) W, with the moments streamed over the calibration rows (about their
    means, and the bias refit too, where the local pass fitted the layer's bias)."""
    convs, L = model.convs, len(model.convs)
    h_new, changed = inputs[0], False
    for l in range(L):
        conv, conv0 = convs[l], original.convs[l]
        info = layers_info[l]
        if changed:
            parts, parts0 = conv.linear_parts(), conv0.linear_parts()
            names = [b.name for b in parts.branches]
            c = parts0.in_channels
            keeps = [info["kept"][n].cpu() for n in names]
            out_keep = _output_keep(layers_info, l, parts0.out_channels)
            targets, tcols = [], []
            for b, (br, br0) in enumerate(zip(parts.branches, parts0.branches)):
                cols0 = br0.cols.cpu()
                mask = torch.isin(cols0, out_keep)
                targets.append(br0.weight.detach().double().cpu()[:, mask])
                tcols.append(torch.searchsorted(out_keep, cols0[mask]))
                if not torch.equal(tcols[-1], br.cols.cpu()):
                    raise RuntimeError(f"layer {l}: branch {br.name!r} output columns of the pruned layer do not "
                                       "match the unpruned layer's kept output channels")
            desc = f"refit layer {l + 1}/{L}"
            fit_bias = info["fit_bias"]

            def centred(S_new_f, T_f, S_old_f, mean_new_f, mean_old_f):
                if not fit_bias:
                    return S_new_f, T_f, S_old_f
                return (about_mean(S_new_f, mean_new, mean_new, mean_new_f, mean_new_f),
                        about_mean(T_f, mean_new, mean_old, mean_new_f, mean_old_f),
                        about_mean(S_old_f, mean_old, mean_old, mean_old_f, mean_old_f))

            if ridge == "auto":
                folds = [(fr.numel(),) + tuple(m.cpu() for m in _cross_moments(
                    conv, conv0, graph, h_new, inputs[l], fr, keeps, names, c, batch_size, progress, desc))
                    for fr in _fold_rows(rows, seed)]
                S_new_raw, T_raw, S_old_raw, mean_new, mean_old = _pooled(folds)
                ridge_l, info["ridge_cv_sequential"] = choose_ridge(
                    [(f[0],) + centred(*f[1:]) for f in folds], keeps, targets, parts.form, tcols)
            else:
                S_new_raw, T_raw, S_old_raw, mean_new, mean_old = (m.cpu() for m in _cross_moments(
                    conv, conv0, graph, h_new, inputs[l], rows, keeps, names, c, batch_size, progress, desc))
                ridge_l = ridge
            S_new, T, S_old = centred(S_new_raw, T_raw, S_old_raw, mean_new, mean_old)
            info["ridge_sequential"] = ridge_l
            new_weights = refit_kept(S_new, keeps, targets, parts.form, ridge_l, tcols, cross=T)
            bias = None if parts.bias is None else parts.bias.detach().double().cpu()
            if fit_bias:  # the unpruned layer's bias on the kept outputs, plus the mean the refit misses
                bias = (parts0.bias.detach().double().cpu()[out_keep]
                        + bias_shift(mean_old, targets, new_weights, keeps, parts.form, tcols, new_mean=mean_new))
            # layers >= 1 keep one channel set for all branches: their current inputs, in place
            conv.load_pruned({n: torch.arange(conv.in_channels) for n in names},
                             {n: w for n, w in zip(names, new_weights)}, bias)
            info["output_rel_error_sequential"] = output_relative_error(
                S_old, targets, new_weights, keeps, parts.form, tcols, new_moment=S_new, cross=T,
                norm_moment=S_old_raw if fit_bias else None)
        else:
            info["output_rel_error_sequential"] = info["output_rel_error"]
        changed = changed or info["k"] < info["in_channels"]
        if l + 1 < L:
            h_new = model.layer(l, h_new, graph)


@torch.no_grad()
def prune(model: nn.Module, graph, x: Tensor, keep: Optional[KeepSpec] = None, scheme: str = "full",
          calib_nodes=None, method: str = "auto", progress: bool = True, batch_size: int = 8192,
          ridge: Union[float, str] = 1e-6, seed: int = 0, solver_kwargs: Optional[dict] = None,
          refit: str = "local", fit_bias: bool = True, objective: str = "next_layer", min_kept: int = None, *,
          target_speedup: Optional[float] = None, max_logit_error: Optional[float] = None,
          max_accuracy_drop: Optional[float] = None, val_nodes=None, val_labels=None) -> nn.Module:
    """A pruned copy of ``model`` (eval mode, BatchNorm folded) with physically smaller weights.

    How much to prune: exactly one of ``keep`` (default 0.25 when none is given), ``target_speedup``,
    ``max_logit_error`` and ``max_accuracy_drop``. The three targets choose the keep ratio of every layer
    (:mod:`gnnaccel.pruning.target`): from a cost model of full inference (GEMM FLOPs and aggregation bytes
    of each layer at its kept widths, as the layer computes them, with machine coefficients measured once per
    process) and each layer's error-versus-keep curve (greedy forward selection on its second moment), the
    per-layer keeps of least summed squared relative layer error ``target_speedup``: whose predicted
    full-inference cost is at most the unpruned one / ``target_speedup``; ``max_logit_error``: the cheapest
    such allocation whose relative logit error on the calibration nodes (measured) is at most the bound;
    ``max_accuracy_drop``: the cheapest whose F1-micro on ``val_nodes`` (indices or mask) against
    ``val_labels`` is at most that much below the unpruned model's. ``pruning_info["target"]`` records
    ``keep_per_layer``, ``predicted_speedup`` and the measured errors
    (:func:`gnnaccel.pruning.target.measure_speedup` adds the measured speedup).

    ``graph``: a :class:`gnnaccel.Graph` (or edge_index / sparse adjacency), ``x`` the node features.
    ``keep``: ratio of kept input channels, one float for every pruned layer or a list with one entry per layer
    (``None`` = keep all); ``k = max(min_kept, round(keep * c))`` (at most c). ``scheme``: ``"full"`` (raw
    features kept, hidden widths pruned) or ``"batched"`` (also layer 0's neighbour-branch raw features; see
    the module doc).
    ``calib_nodes``: None (every node -- calibration needs no labels), an int (that many random nodes, seeded
    by ``seed``), a bool mask (e.g. ``data.train_mask``) or node indices. The default is every node, not the
    training nodes: the refit is a least-squares fit with B * k regressors per layer (k kept channels per
    branch), which needs many more calibration nodes than that (a few training nodes overfit it:
    benchmarks/RESULTS.md, "Pruning accuracy on real graphs"). A labelled subset is never needed; pass a
    mask only to hold nodes out (e.g. the test nodes when measuring). ``method``:
    ``"lasso"`` (the LASSO path with exact budget), ``"greedy"`` (forward selection on the refit's own
    objective: each step keeps the channel whose addition most lowers the error the least-squares refit
    leaves, :func:`~gnnaccel.pruning.select_greedy`), ``"random"`` or ``"magnitude"`` (row norm of the
    weights); all share the ridge least-squares refit. ``"auto"`` (default): on every layer whose calibration
    rows number at least :data:`AUTO_GREEDY_ROWS_PER_REGRESSOR` times its kept input coordinates (every
    hidden layer in practice), both greedy and the LASSO selection refined by greedy's swaps, keeping the
    one whose refit leaves the lower error on the calibration rows (``pruning_info`` records
    ``"greedy"`` or ``"lasso+swaps"`` per layer); elsewhere the plain LASSO (the batched scheme's
    raw-feature layer on a small graph, where the refit error on too few rows would favour features that
    fit just those rows). See benchmarks/RESULTS.md, "Greedy selection on the refit's own error".
    ``refit``: ``"local"`` refits each layer from the *unpruned* model's inputs (step 4 of the module doc);
    ``"sequential"`` (error-compensating) then runs once more from input to output and refits every layer
    whose input has changed (an upstream layer was refit) from the *pruned* upstream model's activations to
    the unpruned layer's output on its kept output channels, W' = (S'_JJ + ridge)^-1 (Z'_J'Z / n) W, with
    S' and the cross moment Z''Z / n streamed over the calibration nodes (memory O(c^2)). The selection is
    the same in both; layers whose input is unchanged (layer 0, and the layers before the first refit one,
    e.g. both layers of a 2-layer model in scheme full) keep the local refit, which is then the same.

    ``min_kept``: the fewest channels a pruned branch keeps (default :data:`MIN_KEPT_CHANNELS`; all of them
    when the layer has fewer), whatever ``keep`` asks: a narrow layer is never pruned to one or two channels
    (it saves next to nothing and can cost accuracy). ``min_kept=1`` gives ``round(keep * c)`` exactly.
    ``pruning_info`` records ``min_kept`` and, per layer, ``k_floored`` (whether the floor raised ``k``).

    ``fit_bias``: refit each layer's bias with its weights (least squares with an intercept, from the moments
    about the calibration mean); layers without a bias keep none. ``objective``: what the LASSO / greedy
    selection of layer l reconstructs: ``"next_layer"`` its kept outputs as the (already pruned) layer l + 1
    reads them, i.e. the output error in the metric of layer l + 1's stacked branch weights; ``"layer"`` its
    kept outputs with every channel weighted alike. The last layer has no next layer: both are the same there.

    ``ridge``: the refit's ridge relative to the mean diagonal of the kept channels' moment, or ``"auto"``:
    per layer the candidate of :data:`gnnaccel.pruning.refit.RIDGE_CANDIDATES` with the lowest
    ``RIDGE_FOLDS``-fold cross-validated output error on the calibration nodes (from per-fold moments, no
    labels; recorded in ``pruning_info`` as ``ridge`` / ``ridge_cv`` per layer). It matters when the kept
    regressors are not much fewer than the calibration nodes (the batched scheme's raw-feature layer 0 on
    small graphs), where the default 1e-6 interpolates the calibration nodes.

    The result carries ``pruning_info``: scheme, method, calibration size and, per layer, the method used
    (``"method"``), the kept input channels of each branch (indices into the *unpruned* layer input), the
    ratio and the relative error of
    the layer's (target-restricted) pre-activation output on the calibration nodes, computed from S
    (with ``refit="sequential"`` also ``output_rel_error_sequential``: the same error with the pruned
    upstream model's inputs, i.e. what the pruned model actually computes on those nodes).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    targets = (target_speedup, max_logit_error, max_accuracy_drop)
    if any(t is not None for t in targets) or val_nodes is not None or val_labels is not None:
        if keep is not None:
            raise ValueError("give exactly one of keep, target_speedup, max_logit_error, max_accuracy_drop")
        from .target import prune_to_target

        return prune_to_target(model, graph, x, target_speedup=target_speedup, max_logit_error=max_logit_error,
                               max_accuracy_drop=max_accuracy_drop, val_nodes=val_nodes, val_labels=val_labels,
                               scheme=scheme, calib_nodes=calib_nodes, method=method, progress=progress,
                               batch_size=batch_size, ridge=ridge, seed=seed, solver_kwargs=solver_kwargs,
                               refit=refit, fit_bias=fit_bias, objective=objective, min_kept=min_kept)
    if keep is None:
        keep = 0.25
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if refit not in REFITS:
        raise ValueError(f"refit must be one of {REFITS}, got {refit!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if not isinstance(fit_bias, bool):
        raise TypeError(f"fit_bias must be a bool, got {type(fit_bias).__name__}")
    if isinstance(ridge, str):
        if ridge != "auto":
            raise ValueError(f"ridge must be a number >= 0 or 'auto', got {ridge!r}")
    elif isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0:
        raise ValueError(f"ridge must be a number >= 0 or 'auto', got {ridge!r}")
    if min_kept is None:
        min_kept = MIN_KEPT_CHANNELS
    if isinstance(min_kept, bool) or not isinstance(min_kept, int) or min_kept < 1:
        raise ValueError(f"min_kept must be an int >= 1, got {min_kept!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a 2-D node feature tensor, got {getattr(x, 'shape', type(x).__name__)}")
    from ..nn.adjacency import as_graph

    model = _as_gnnaccel_model(model)
    g = as_graph(graph, x.shape[0])
    if g.num_nodes == 0:
        raise ValueError("prune needs a graph with at least one node (it calibrates on node features), got 0")
    convs = model.convs
    L = len(convs)
    ratios = _keep_ratios(keep, L, scheme)
    for i, conv in enumerate(convs):
        extra = conv.linear_parts().extra
        index = extra.get("input_index", {})
        if any(v is not None for v in index.values()):
            raise ValueError(f"layer {i} ({type(conv).__name__}) already reads per-branch input subsets "
                             "(a batched-pruned layer); prune the original model instead")
        norm = model.norms[i] if hasattr(model, "norms") else None
        if isinstance(norm, nn.LayerNorm) and i < L - 1:
            raise ValueError(f"layer {i} ({type(conv).__name__}) is followed by a LayerNorm, which normalises over "
                             "all its output channels: dropping some would change the normalisation; not supported")
        if refit == "sequential" and not extra.get("outputs_are_layer_outputs", True):
            raise ValueError(f"layer {i} ({type(conv).__name__}): refit='sequential' refits a layer's outputs as the "
                             "next layer keeps them, but this layer's linear part (x W and attention terms) is not "
                             "its output; use refit='local'")
        if extra.get("normalize", False) and i < L - 1:
            raise ValueError(f"layer {i} ({type(conv).__name__}) L2-normalises its output (normalize=True): "
                             "dropping its output channels would change the normalisation; not supported")
    rows = _calibration_rows(calib_nodes, g.num_nodes, x.device, seed)
    if ridge == "auto" and rows.numel() < RIDGE_FOLDS:
        raise ValueError(f"ridge='auto' cross-validates over {RIDGE_FOLDS} folds of the calibration nodes and "
                         f"needs at least {RIDGE_FOLDS} of them, got {rows.numel()}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("layer 0: input features x contain NaN or Inf")
    # Layer inputs of the unpruned model. Computed under no_grad (not inference_mode, as full_inference
    # does) so that derived structures the layers memoise in graph.cache stay usable by autograd later.
    inputs = [x]
    for i in range(L - 1):
        inputs.append(model.layer(i, inputs[-1], g))
    solver_kwargs = dict(solver_kwargs or {})
    original = copy.deepcopy(model) if refit == "sequential" else None

    layers_info: List[dict] = [None] * L
    with _layer_progress(L, progress) as bar:
        for l in range(L - 1, -1, -1):
            bar.set_postfix_str(f"layer {l}")
            problem = _calibrate(model, l, g, inputs[l], rows, ratios[l], scheme, min_kept, fit_bias, ridge, objective,
                                 method, batch_size, progress, seed)
            info = problem.info
            layers_info[l] = info
            if problem.k < problem.c:  # else nothing to select, and a refit on all channels reproduces the layer
                keeps = _select_layer(problem, method, seed + l, solver_kwargs, ridge, progress)
                new_weights, bias = _refit_layer(problem, keeps, ridge)
                _install(model, problem, keeps, new_weights, bias)
            bar.update(1)
    if refit == "sequential":
        _sequential_refit(model, original, g, inputs, rows, layers_info, ridge, batch_size, progress, seed)
    model.pruning_info = {"scheme": scheme, "method": method, "keep": ratios, "calib_nodes": int(rows.numel()),
                          "ridge": ridge, "refit": refit, "fit_bias": fit_bias, "objective": objective,
                          "min_kept": min_kept, "layers": layers_info}
    return model.eval()


def finetune(model: nn.Module, data, epochs: int = 20, lr: float = 1e-3, weight_decay: float = 0.0,
             patience: int = 10, verbose: bool = False):
    """A few epochs of full-batch Adam training of a (pruned) model on ``data`` (a GraphData: graph, x, y,
    masks), in place, keeping the weights with the best validation F1-micro; if no epoch beats the starting
    weights on validation, they are restored. The pruned shapes and kept indices do not change. Returns the
    model in eval mode."""
    from ..train import evaluate, train

    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    if epochs == 0:
        return model.eval()
    before = evaluate(model, data.graph, data.x, data.y, data.val_mask)
    start = copy.deepcopy(model.state_dict())
    result = train(model, data.graph, data.x, data.y, data.train_mask, data.val_mask, epochs=epochs, lr=lr,
                   weight_decay=weight_decay, patience=patience, verbose=verbose)
    if result.best_val < before:
        model.load_state_dict(start)
    return model.eval()

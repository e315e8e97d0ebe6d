"""Prune to a target (gnnaccel.pruning.target): cost model against counted FLOPs and the layers' own
project-first decisions, error curves against the refit's error, the allocation against brute force, and the
chosen budgets meeting their constraints on the calibration nodes."""
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import gnnaccel
from gnnaccel import Graph
from gnnaccel.backend import use_backend
from gnnaccel.inference import full_inference
from gnnaccel.models import GCN, GraphSAGE, SAINTGraphSAGE
from gnnaccel.nn.protocol import graph_block
from gnnaccel.pruning import refit as refit_kept, select_greedy
from gnnaccel.pruning import target as T
from gnnaccel.pruning.prune import _calibrate
from gnnaccel.pruning.refit import output_relative_error
from gnnaccel.pruning.report import logit_relative_error
from gnnaccel.train import f1_micro
from conftest import random_edge_index


def make_problem(generator, model_cls=GraphSAGE, n=160, e=1200, f=40, hidden=32, classes=6, layers=3):
    g = Graph.from_edge_index(random_edge_index(n, e, generator, hub=True), n)
    x = torch.randn(n, f, generator=generator)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    model = model_cls(f, hidden, classes, num_layers=layers).eval()
    return model, g, x


def counted_flops(model, g, x) -> float:
    """FLOPs of full inference counted by torch's FlopCounterMode on the pure-torch backend (aten GEMMs)."""
    with use_backend("torch"), FlopCounterMode(display=False) as counter:
        full_inference(model, g, x, progress=False)
    return float(counter.get_total_flops())


def branch_widths(model):
    """Per layer: input width read by each branch and output width, from the installed weights."""
    out = []
    for conv in model.convs:
        parts = conv.linear_parts()
        out.append(({b.name: int(b.weight.shape[0]) for b in parts.branches}, int(parts.out_channels)))
    return out


@pytest.mark.parametrize("model_cls", [GraphSAGE, GCN, SAINTGraphSAGE])
def test_cost_model_flops_match_counted(generator, model_cls):
    model, g, x = make_problem(generator, model_cls)
    shapes = T.layer_shapes(model, g)
    predicted = sum(T.layer_cost_counts(s, {b[0]: s.in_channels for b in s.branches}, s.out_channels).flops
                    for s in shapes)
    assert predicted == counted_flops(model, g, x)


@pytest.mark.parametrize("model_cls", [GraphSAGE, GCN])
def test_cost_model_of_pruned_model_matches_counted_flops_and_decisions(generator, model_cls):
    model, g, x = make_problem(generator, model_cls, hidden=48)
    pruned = gnnaccel.prune(model, g, x, keep=[None, 0.25, 0.75], progress=False)
    shapes = T.layer_shapes(model, g)
    widths = branch_widths(pruned)
    total = 0.0
    h = x
    for l, (shape, (ins, out)) in enumerate(zip(shapes, widths)):
        counts = T.layer_cost_counts(shape, ins, out)
        total += counts.flops
        conv = pruned.convs[l]
        block = graph_block(conv, g, x.dtype)
        assert shape.num_edges == block.num_edges
        # the layer's own decision (a plan = it projects before aggregating) is the one the model counts
        with torch.no_grad():
            planned = conv.block_plan(h, block) is not None
        assert any(counts.projects_first.values()) == planned
        width = {n: (out if counts.projects_first[n] else ins[n]) for n in counts.projects_first}
        assert counts.gathered_bytes == sum(block.num_edges * w * 4 for w in width.values())
        with torch.no_grad():
            h = pruned.layer(l, h, g)
    assert total == counted_flops(pruned, g, x)


def test_calibrate_machine_cached_and_positive():
    a = T.calibrate_machine()
    assert T.calibrate_machine() is a
    assert all(v > 0 for v in (a.flop, a.gathered_byte, a.streamed_byte, a.layer)) and a.edge >= 0


def test_error_curve_matches_refit_error(generator):
    model, g, x = make_problem(generator)
    folded = model  # no norms
    with torch.no_grad():
        h1 = folded.layer(0, x, g)
        inputs = [x, h1, folded.layer(1, h1, g)]
    rows = torch.arange(g.num_nodes)
    l = 2  # the last layer: no next-layer metric, the curve is the plain relative output error squared
    problem = _calibrate(folded, l, g, inputs[l], rows, 0.5, "full", 1, True, 1e-6, "next_layer", "greedy",
                         8192, False, 0)
    assert problem.metric is None
    curve = T._curve_from_greedy(problem, 20, 1e-6)
    assert curve[0] == pytest.approx(1.0)
    assert all(a >= b - 1e-12 for a, b in zip(curve, curve[1:]))  # more channels never hurt
    for k in (4, 11, 20):
        keeps = select_greedy(problem.S, problem.weights, k, problem.form, problem.cols, ridge=1e-6, max_swaps=0)
        w = refit_kept(problem.S, keeps, problem.weights, problem.form, 1e-6, problem.cols)
        ref = output_relative_error(problem.S, problem.weights, w, keeps, problem.form, problem.cols) ** 2
        assert curve[k] == pytest.approx(ref, rel=1e-4, abs=1e-9)


def test_allocate_is_the_best_fitting_allocation(generator):
    allocs = [T.Allocation([i, j], float(torch.rand(1, generator=generator)),
                           float(torch.rand(1, generator=generator))) for i in range(8) for j in range(8)]
    for budget in (0.05, 0.3, 0.7, 1.0):
        best = T.allocate(allocs, budget)
        fitting = [a for a in allocs if a.seconds <= budget]
        assert best.seconds <= budget
        assert best.error == min(a.error for a in fitting)
    cheapest = min(a.seconds for a in allocs)
    assert T.allocate(allocs, cheapest / 2).seconds == cheapest  # nothing fits: the cheapest
    front = T.pareto_front(allocs)
    for a in allocs:  # nothing off the front beats a front point on both
        assert not any(a.seconds < f.seconds and a.error < f.error for f in front)
    assert all(f1.seconds > f2.seconds and f1.error < f2.error for f1, f2 in zip(front, front[1:]))


def test_target_speedup_meets_predicted_cost_and_installs_it(generator):
    # wide enough that GEMMs, not the per-layer overhead, dominate the predicted cost
    model, g, x = make_problem(generator, n=400, e=3000, f=128, hidden=128)
    pruned = gnnaccel.prune(model, g, x, target_speedup=2.0, progress=False)
    info = pruned.pruning_info["target"]
    assert info["kind"] == "target_speedup" and info["value"] == 2.0
    assert "reachable" not in info
    assert info["predicted_speedup"] >= 2.0
    assert info["predicted_seconds"] <= info["predicted_seconds_unpruned"] / 2.0 * (1 + 1e-9)
    # the installed widths are the chosen ones, and the cost model on them predicts the recorded cost
    shapes = T.layer_shapes(model, g)
    widths = branch_widths(pruned)
    assert [ins[next(iter(ins))] for ins, _ in widths] == info["kept_per_layer"]
    machine = T.calibrate_machine()
    seconds = sum(T.layer_cost_counts(s, ins, out).seconds(machine) for s, (ins, out) in zip(shapes, widths))
    assert seconds == pytest.approx(info["predicted_seconds"], rel=1e-9)
    assert info["keep_per_layer"][0] == 1.0 and min(info["keep_per_layer"]) < 1.0
    # per-layer choice: layers may differ
    assert pruned.pruning_info["keep"] == pytest.approx(info["keep_per_layer"])


def test_target_speedup_unreachable_is_flagged(generator):
    model, g, x = make_problem(generator, hidden=16)
    pruned = gnnaccel.prune(model, g, x, target_speedup=1000.0, progress=False)
    info = pruned.pruning_info["target"]
    assert info["reachable"] is False and info["predicted_speedup"] < 1000.0


@pytest.mark.parametrize("bound", [0.02, 0.1])
def test_max_logit_error_meets_bound_on_calibration_nodes(generator, bound):
    model, g, x = make_problem(generator, hidden=48)
    calib = torch.randperm(g.num_nodes, generator=generator)[:120]
    pruned = gnnaccel.prune(model, g, x, max_logit_error=bound, calib_nodes=calib, progress=False)
    info = pruned.pruning_info["target"]
    with torch.no_grad():
        base = full_inference(model, g, x, progress=False)
        out = full_inference(pruned, g, x, progress=False)
    err = logit_relative_error(base[calib], out[calib])
    assert err <= bound
    assert info["measured"] == pytest.approx(err, rel=1e-6, abs=1e-9)
    # the most aggressive tried allocation meeting the bound was chosen
    ok = [t for t in info["tried"] if t["measured"] <= bound]
    if ok:
        assert info["predicted_speedup"] == pytest.approx(max(t["predicted_speedup"] for t in ok))


def test_max_logit_error_looser_bound_prunes_at_least_as_much(generator):
    model, g, x = make_problem(generator, hidden=48)
    tight = gnnaccel.prune(model, g, x, max_logit_error=0.01, progress=False).pruning_info["target"]
    loose = gnnaccel.prune(model, g, x, max_logit_error=0.5, progress=False).pruning_info["target"]
    assert loose["predicted_speedup"] >= tight["predicted_speedup"]
    assert loose["predicted_speedup"] > 1.0


def test_max_accuracy_drop_meets_bound_on_validation_nodes(generator):
    model, g, x = make_problem(generator, hidden=48)
    val = torch.randperm(g.num_nodes, generator=generator)[:80]
    with torch.no_grad():
        labels = full_inference(model, g, x, progress=False)[val].argmax(1)  # the unpruned model is right
    labels[:10] = (labels[:10] + 1) % 6
    pruned = gnnaccel.prune(model, g, x, max_accuracy_drop=0.05, val_nodes=val, val_labels=labels,
                            progress=False)
    with torch.no_grad():
        base = full_inference(model, g, x, progress=False)
        out = full_inference(pruned, g, x, progress=False)
    drop = f1_micro(base[val], labels) - f1_micro(out[val], labels)
    assert drop <= 0.05
    assert pruned.pruning_info["target"]["measured"] == pytest.approx(drop)


def test_measure_speedup_records(generator):
    model, g, x = make_problem(generator, hidden=16)
    pruned = gnnaccel.prune(model, g, x, target_speedup=1.5, progress=False)
    s = T.measure_speedup(model, pruned, g, x, rounds=3, warmup=1)
    assert s["p25"] <= s["median"] <= s["p75"] and s["median"] > 0
    assert pruned.pruning_info["target"]["measured_speedup"] == s


def test_batched_scheme_prunes_layer0_neighbour_branch(generator):
    model, g, x = make_problem(generator, n=400, e=6000, f=128, hidden=64, layers=2)
    pruned = gnnaccel.prune(model, g, x, target_speedup=1.2, scheme="batched", progress=False)
    info = pruned.pruning_info["target"]
    assert info["predicted_speedup"] >= 1.2 and "reachable" not in info
    ins, _ = branch_widths(pruned)[0]
    assert ins["self"] == x.shape[1] and ins["neigh"] == info["kept_per_layer"][0]


@pytest.mark.parametrize("kwargs, match", [
    (dict(keep=0.5, target_speedup=2.0), "exactly one"),
    (dict(target_speedup=2.0, max_logit_error=0.1), "exactly one"),
    (dict(target_speedup=0.5), ">= 1"),
    (dict(target_speedup=float("nan")), "finite"),
    (dict(target_speedup=True), "finite"),
    (dict(max_logit_error=-0.1), "> 0"),
    (dict(max_accuracy_drop=0.1), "val_nodes and val_labels"),
    (dict(max_accuracy_drop=2.0, val_nodes=[0, 1], val_labels=[0, 1]), "at most 1"),
    (dict(max_accuracy_drop=0.1, val_nodes=[0, 1], val_labels=[0, 1, 2]), "val_labels has 3"),
    (dict(target_speedup=2.0, val_nodes=[0, 1]), "only used with max_accuracy_drop"),
    (dict(target_speedup=2.0, min_kept=0), "min_kept"),
    (dict(target_speedup=2.0, scheme="nope"), "scheme"),
])
def test_argument_validation(generator, kwargs, match):
    model, g, x = make_problem(generator, hidden=16)
    with pytest.raises(ValueError, match=match):
        gnnaccel.prune(model, g, x, progress=False, **kwargs)


def test_nan_features_rejected(generator):
    model, g, x = make_problem(generator, hidden=16)
    x[3, 2] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        gnnaccel.prune(model, g, x, target_speedup=2.0, progress=False)


def test_default_keep_unchanged(generator):
    model, g, x = make_problem(generator, hidden=16)
    a = gnnaccel.prune(model, g, x, progress=False)
    b = gnnaccel.prune(model, g, x, keep=0.25, progress=False)
    assert a.pruning_info["keep"] == b.pruning_info["keep"]

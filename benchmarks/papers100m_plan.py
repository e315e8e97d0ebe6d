"""The ogbn-papers100M plan for distributed full inference: memory per rank, halo bytes per rank per layer and
expected time, at 16 and 64 ranks, from measured rates and halo ratios (RESULTS.md, "Distributed full
inference").

    PYTHONPATH=$PWD python benchmarks/papers100m_plan.py --bench benchmarks/out/distributed.json \
        --scaling benchmarks/out/partition_scaling.json [--cores 32 --bandwidth-gbit 100]

Inputs: the single-core aggregation rate (edge-channels/s) and GEMM rate (FLOP/s) measured by
bench_distributed.py, and the halo-to-owned ratios of METIS and random partitions at 16 / 64 parts measured by
partition_scaling.py on the synthetic power-law graph (a stand-in: papers100M's own ratios need its edge
list). Model: 2-layer GraphSAGE 128 -> 256 -> 172 and its keep-1/4 pruned copy (scheme batched: layer 0's
neighbour branch reads 32 raw features, hidden 64). Buffers follow gnnaccel.distributed.full_inference: the
rank's features and CSR (int64), each layer's input, its source table over owned + halo rows of the
exchanged channels (owned rows only for the full-width input of a pruned layer), a project-first layer's
projection of every source row, and the output rows.
"""
from __future__ import annotations

import argparse
import json

N, E, F, HIDDEN, CLASSES = 111_059_956, 1_615_685_872, 128, 256, 172
GB = 1e9


def layers(pruned: bool):
    """Per layer: (input width, exchanged channels, aggregated channels, output width, projects first,
    GEMM FLOP per owned row, GEMM FLOP per source row)."""
    if not pruned:
        return [  # SAGE 128 -> 256: aggregate first, then [agg | x] @ [W_l; W_r]
            dict(c_in=F, ex=F, agg=F, out=HIDDEN, per_row=2 * (F + F) * HIDDEN, per_src=0),
            # SAGE 256 -> 172: project every source row (x W_l), aggregate 172, root x W_r
            dict(c_in=HIDDEN, ex=HIDDEN, agg=CLASSES, out=CLASSES, per_row=2 * HIDDEN * CLASSES,
                 per_src=2 * HIDDEN * CLASSES)]
    h = HIDDEN // 4
    return [dict(c_in=F, ex=F // 4, agg=F // 4, out=h, per_row=2 * (F // 4 + F) * h, per_src=0),
            dict(c_in=h, ex=h, agg=h, out=CLASSES, per_row=2 * (h + h) * CLASSES, per_src=0)]


def plan(P: int, ratio: float, pruned: bool, agg_rate: float, gemm_rate: float, cores: int, bw: float,
         edges: int = E) -> dict:
    n = N / P
    e = edges / P
    halo = ratio * n
    base = n * F * 4 + e * 8 + n * 8 + halo * 40  # features, CSR (int64), halo ids/owners/send lists
    peak, rows = 0.0, []
    for L in layers(pruned):
        if L["ex"] == L["c_in"]:  # the input table over owned + halo rows, halo received in place
            table = (n + halo) * L["c_in"] * 4
        else:  # pruned: owned rows of the input (its halo rows are never touched) + compact neighbour table
            table = n * L["c_in"] * 4 + (n + halo) * L["ex"] * 4
        plan_buf = (n + halo) * L["agg"] * 4 if L["per_src"] else 0.0  # a project-first layer's projections
        live = table + plan_buf + n * L["out"] * 4  # + the output rows
        peak = max(peak, live)
        received = halo * L["ex"] * 4
        t_agg = e * L["agg"] / (agg_rate * cores)
        t_gemm = (n * L["per_row"] + (n + halo) * L["per_src"]) / (gemm_rate * cores)
        t_ex = received / bw
        rows.append({"received_GB": received / GB, "compute_s": t_agg + t_gemm, "aggregate_s": t_agg,
                     "gemm_s": t_gemm, "exchange_s": t_ex})
    return {"memory_GB": (base + peak) / GB, "layers": rows,
            "time_overlapped_s": sum(max(r["compute_s"], r["exchange_s"]) for r in rows),
            "time_sequential_s": sum(r["compute_s"] + r["exchange_s"] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", default="benchmarks/out/distributed.json")
    ap.add_argument("--scaling", default="benchmarks/out/partition_scaling.json")
    ap.add_argument("--cores", type=int, default=32, help="cores per rank (rates scale linearly: optimistic for "
                                                         "the memory-bound aggregation)")
    ap.add_argument("--bandwidth-gbit", type=float, default=100.0, help="per-rank network bandwidth, Gbit/s")
    ap.add_argument("--symmetrised", action="store_true", help="3.2B edges (both directions) instead of 1.6B")
    args = ap.parse_args()
    bench = json.load(open(args.bench))
    scaling = json.load(open(args.scaling))
    agg_rate = bench["rates"]["aggregate_edge_channels_per_s"]
    gemm_rate = bench["rates"]["gemm_flops_per_s"]
    bw = args.bandwidth_gbit * 1e9 / 8
    edges = 2 * E if args.symmetrised else E
    print(f"rates (one core): aggregation {agg_rate / 1e9:.2f} G edge-channels/s, GEMM {gemm_rate / 1e9:.1f} GFLOP/s;"
          f" {args.cores} cores per rank; network {args.bandwidth_gbit:g} Gbit/s per rank; {edges / 1e9:.2f}B edges")
    print("| ranks | partition | halo/owned | model | memory / rank GB | received / rank / layer GB (L0, L1) | "
          "compute s (L0, L1) | exchange s (L0, L1) | total s overlapped (sequential) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for P in (16, 64):
        for method in ("metis", "random"):
            row = [r for r in scaling["rows"] if r["method"] == method and r["parts"] == P]
            if not row:
                continue
            ratio = row[0]["halo_over_owned_mean"]
            for pruned in (False, True):
                p = plan(P, ratio, pruned, agg_rate, gemm_rate, args.cores, bw, edges)
                L = p["layers"]
                print(f"| {P} | {method} | {ratio:.2f} | {'keep 1/4' if pruned else 'unpruned'} | "
                      f"{p['memory_GB']:.1f} | {L[0]['received_GB']:.2f}, {L[1]['received_GB']:.2f} | "
                      f"{L[0]['compute_s']:.2f}, {L[1]['compute_s']:.2f} | "
                      f"{L[0]['exchange_s']:.2f}, {L[1]['exchange_s']:.2f} | "
                      f"{p['time_overlapped_s']:.2f} ({p['time_sequential_s']:.2f}) |")


if __name__ == "__main__":
    main()

"""``python -m gnnaccel.distributed infer|gather`` (infer: launched by ``torchrun``, one process per part)."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys


def _infer(args) -> int:
    import torch
    import torch.distributed as dist

    from .inference import DistributedInferenceError, _agree, _device_for, full_inference
    from .store import read_manifest, write_output

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        print("infer runs under torchrun: torchrun --nproc-per-node P -m gnnaccel.distributed infer ...",
              file=sys.stderr)
        return 2
    backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if args.threads:
        torch.set_num_threads(args.threads)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=args.timeout))
    try:
        rank = dist.get_rank()
        try:
            out, ids, stats = full_inference(args.model, args.parts, overlap=not args.no_overlap,
                                             return_stats=True)
        except DistributedInferenceError as e:
            print(f"[rank {rank}] {e}", file=sys.stderr)
            return 1
        error = None
        try:
            write_output(args.out, rank, read_manifest(args.parts), out.cpu(), ids)
        except Exception as e:
            error = e
        try:
            _agree(error, None, _device_for(None), "while writing the outputs")
        except DistributedInferenceError as e:
            print(f"[rank {rank}] {e}", file=sys.stderr)
            return 1
        if args.stats:
            # one writer: ranks sharing a stdout pipe would interleave their lines
            mine = {"rank": rank, "layers": [vars(s) for s in stats.layers]}
            every = [None] * dist.get_world_size() if rank == 0 else None
            dist.gather_object(mine, every, dst=0)
            if rank == 0:
                sys.stdout.write("".join(json.dumps(s) + "\n" for s in every))
                sys.stdout.flush()
        return 0
    finally:
        dist.destroy_process_group()


def _gather(args) -> int:
    from .store import gather

    out = gather(args.parts, args.outputs, args.out)
    print(f"{args.out}: {list(out.shape)} {out.dtype}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gnnaccel.distributed",
                                     description="Distributed full-graph inference over a partitioned graph")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("infer", help="run under torchrun: each rank computes its part's rows")
    p.add_argument("--parts", required=True, help="partition directory (gnnaccel.distributed.partition)")
    p.add_argument("--model", required=True, help="model file saved with gnnaccel.save")
    p.add_argument("--out", required=True, help="directory for the per-rank outputs")
    p.add_argument("--backend", choices=("gloo", "nccl"), default=None, help="default: nccl with CUDA, else gloo")
    p.add_argument("--timeout", type=float, default=600.0, help="process-group timeout in seconds")
    p.add_argument("--threads", type=int, default=0, help="torch threads per rank (0: torch's default)")
    p.add_argument("--no-overlap", action="store_true", help="exchange, then compute (no overlap)")
    p.add_argument("--stats", action="store_true", help="rank 0 prints every rank's per-layer exchange/compute figures, one JSON line per rank")
    g = sub.add_parser("gather", help="assemble the per-rank outputs in the original node order")
    g.add_argument("--parts", required=True)
    g.add_argument("--outputs", required=True, help="the directory given to infer --out")
    g.add_argument("--out", required=True, help="output file (torch.save of a [num_nodes, C] tensor)")
    args = parser.parse_args(argv)
    return _infer(args) if args.command == "infer" else _gather(args)


if __name__ == "__main__":
    sys.exit(main())

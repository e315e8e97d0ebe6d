"""One rank of the distributed-inference tests (spawned by tests/test_distributed.py, not collected by pytest).

argv: rank world_size port cases.json. For each case it runs gnnaccel.distributed.full_inference and writes
the rank's rows (write_output), or, when the run raises, the error text to ``<out>/error_rank<r>.txt``.
"""
import datetime
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def main() -> None:
    rank, world, port, cases = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    from gnnaccel.distributed import DistributedInferenceError, full_inference, read_manifest, write_output

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        for case in json.loads(Path(cases).read_text()):
            out_dir = Path(case["out"])
            out_dir.mkdir(parents=True, exist_ok=True)
            try:
                out, ids = full_inference(case["model"], case["parts"], overlap=case.get("overlap", True))
                write_output(out_dir, rank, read_manifest(case["parts"]), out, ids)
            except DistributedInferenceError as e:
                (out_dir / f"error_rank{rank}.txt").write_text(str(e))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

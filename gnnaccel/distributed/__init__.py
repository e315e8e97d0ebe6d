"""Partitioned full-graph inference on ``torch.distributed`` (gloo on CPU, NCCL on GPU).

* :func:`partition` splits a graph and its features into one directory per rank (METIS through the optional
  ``pymetis``, random or contiguous ranges), renumbering nodes so that each part owns a contiguous id range.
* :func:`full_inference` runs on every rank of a process group and returns the rank's output rows, exchanging
  halo rows per layer with ``all_to_all_single`` (pruned models exchange only the channels they read).
* ``torchrun --nproc-per-node P -m gnnaccel.distributed infer --parts DIR --model M.pt --out DIR`` writes each
  rank's rows; ``python -m gnnaccel.distributed gather --parts DIR --outputs DIR --out OUT.pt`` (or
  :func:`gather`) assembles them in the original node order.
"""
from .inference import DistributedInferenceError, LayerStats, RunStats, full_inference
from .partition import METHODS, PartitionInfo, partition
from .store import PartitionFileError, gather, load_part, read_manifest, write_output

__all__ = ["partition", "full_inference", "gather", "load_part", "read_manifest", "write_output", "PartitionInfo",
           "PartitionFileError", "DistributedInferenceError", "LayerStats", "RunStats", "METHODS"]

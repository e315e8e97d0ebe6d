"""Flip every byte of a small saved (pruned) model, one at a time, and load each damaged file.

    python benchmarks/flip_sweep.py            # a 2-layer GraphSAGE pruned (batched scheme), ~5.6 KB

Counts: rejected (gnnaccel.serialize.ModelFileError), loaded with exactly the original state (bit-equal tensors,
same widths), loaded with anything different (must be 0), other exceptions (must be 0).
"""
from __future__ import annotations

import collections
import os
import sys
import tempfile
import time
import warnings

import torch

import gnnaccel
from gnnaccel import Graph
from gnnaccel.models import GraphSAGE
from gnnaccel.serialize import ModelFileError


def main() -> int:
    warnings.simplefilter("ignore")
    gen = torch.Generator().manual_seed(0)
    graph = Graph.from_edge_index(torch.randint(40, (2, 200), generator=gen), 40)
    x = torch.randn(40, 6, generator=gen)
    torch.manual_seed(0)
    model = gnnaccel.prune(GraphSAGE(6, 4, 3, num_layers=2, norm="batchnorm").eval(), graph, x, keep=0.5,
                           scheme="batched", progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        path, flipped = os.path.join(tmp, "m.pt"), os.path.join(tmp, "flipped.pt")
        gnnaccel.save(model, path)
        data = open(path, "rb").read()
        ref = model.state_dict()
        counts = collections.Counter()
        start = time.perf_counter()
        for pos in range(len(data)):
            damaged = bytearray(data)
            damaged[pos] ^= 0x5A
            with open(flipped, "wb") as fh:
                fh.write(damaged)
            try:
                loaded = gnnaccel.load(flipped)
            except ModelFileError:
                counts["rejected"] += 1
                continue
            except Exception as exc:  # noqa: BLE001 - counted, must not happen
                counts[f"other {type(exc).__name__}"] += 1
                continue
            sd = loaded.state_dict()
            same = sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in sd) and \
                [c.in_channels for c in loaded.convs] == [c.in_channels for c in model.convs]
            counts["loaded identical" if same else "LOADED DIFFERENT"] += 1
    print(f"{len(data)} bytes, {len(data)} single-byte flips in {time.perf_counter() - start:.0f} s: {dict(counts)}")
    return 0 if set(counts) <= {"rejected", "loaded identical"} else 1


if __name__ == "__main__":
    sys.exit(main())

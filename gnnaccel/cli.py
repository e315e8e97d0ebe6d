"""Command line: ``python -m gnnaccel demo`` (and ``gnnaccel demo`` once installed)."""
from __future__ import annotations

import argparse
import sys
import warnings


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="gnnaccel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the end-to-end demo on a synthetic graph")
    demo.add_argument("--nodes", type=int, default=30_000)
    demo.add_argument("--degree", type=float, default=20.0)
    demo.add_argument("--features", type=int, default=128)
    demo.add_argument("--classes", type=int, default=8)
    demo.add_argument("--hidden", type=int, default=256)
    demo.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    if args.command == "demo":
        warnings.filterwarnings("ignore", message="Sparse")
        from .demo import run_demo

        run_demo(args.nodes, args.degree, args.features, args.classes, args.hidden, args.epochs,
                 progress=sys.stderr.isatty())


if __name__ == "__main__":
    main()

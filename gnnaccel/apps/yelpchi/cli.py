"""The ``spam`` subcommand of ``python -m gnnaccel``: the YelpChi stream (default) and ``spam serve``.

Kept here (imports nothing heavy at parse time) so that gnnaccel/cli.py only registers it."""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_spam_parser", "cmd_spam"]


def _batch(value: str):
    if value == "day":
        return value
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch must be 'day' or a positive integer, got {value!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"--batch must be 'day' or a positive integer, got {v}")
    return v


def _int_at_least(low: int):
    def parse(value: str) -> int:
        try:
            v = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {v}")
        return v
    return parse


def _fanouts(value: str):
    out = []
    for part in value.split(","):
        part = part.strip()
        if part in ("all", "-1", "none", "None"):
            out.append(None)
            continue
        try:
            v = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--fanouts: expected comma-separated positive ints or 'all', got "
                                             f"{value!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"--fanouts entries must be positive or 'all', got {v}")
        out.append(v)
    if len(out) != 2:
        raise argparse.ArgumentTypeError(f"--fanouts needs one entry per layer (2), got {value!r}")
    return tuple(out)


def _add_common(p) -> None:
    p.add_argument("--data", metavar="DIR", default=None,
                   help="directory holding yelpchi_raw/metadata.gz (default: $GNNACCEL_FRAUD_DATA, "
                        "$GNNACCEL_DATA/fraud, or ../shared/data/fraud next to the repository); read only")
    p.add_argument("--epochs", type=_int_at_least(1), default=60, help="training epochs of the graph models "
                                                                      "(default 60)")
    p.add_argument("--hidden", type=_int_at_least(1), default=32, help="hidden width of the graph models "
                                                                      "(default 32)")
    p.add_argument("--max-days", type=_int_at_least(3), default=None,
                   help="use only the last N days of the timeline (quick runs; default: all)")
    p.add_argument("--fanouts", type=_fanouts, default=(10, None),
                   help="engine neighbours per layer, comma-separated, 'all' = every neighbour (default 10,all: "
                        "10 sampled for the new reviews' neighbours, all of the new reviews' own)")
    p.add_argument("--on-new-edges", choices=("keep", "invalidate"), default="keep",
                   help="the cached engines' policy when new reviews link to cached ones: keep their hidden "
                        "features (reuse, approximate) or invalidate them (exact; the cache then never hits in "
                        "this stream) (default keep)")
    p.add_argument("--threads", type=_int_at_least(1), default=1,
                   help="intra-op threads of torch while streaming (default 1: a day's batch is small work, and with more threads "
                        "than idle cores every op waits for a descheduled worker)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or messages")


def add_spam_parser(sub) -> None:
    """Register ``spam`` (and ``spam serve``) on the main parser's subparsers."""
    spam = sub.add_parser("spam", help="real-time review-spam detection on YelpChi: train, threshold, stream, "
                                       "report (or `spam serve`)",
                          description="Build the YelpChi review graph and causal features, train on the first 60% "
                                      "of the timeline, choose thresholds on the next 20%, stream the last 20% "
                                      "through the batched engine and print the metrics table.")
    _add_common(spam)
    spam.add_argument("--batch", type=_batch, default="day", help="stream batch: 'day' (one day of reviews) or "
                                                                  "N reviews (default day)")
    spam.add_argument("--json", metavar="FILE", default=None, help="write the results as JSON to FILE")
    spam.add_argument("--plot-dir", metavar="DIR", default=None,
                      help="write latency.png and pr_curves.png to DIR (needs matplotlib)")
    spam_sub = spam.add_subparsers(dest="spam_command", metavar="serve")
    serve = spam_sub.add_parser("serve", help="serve the pruned YelpChi model over HTTP (gnnaccel.serving)")
    _add_common(serve)
    serve.add_argument("--model", choices=("relational", "sage"), default="relational",
                       help="graph model to serve: relational (default, the better one on the stream; POST /nodes "
                            "then needs \"edge_weight\": each new edge's relation bitmask, 1 = same user, 2 = same "
                            "product and rating, 4 = same product and month) or sage (unweighted edges)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    spam.set_defaults(func=cmd_spam)


def _config(args):
    from .app import SpamConfig

    return SpamConfig(data_dir=args.data, epochs=args.epochs, hidden=args.hidden, max_days=args.max_days,
                      seed=args.seed, progress=not args.no_progress, fanouts=args.fanouts,
                      on_new_edges=args.on_new_edges, threads=args.threads,
                      batch=getattr(args, "batch", "day"), json_path=getattr(args, "json", None),
                      plot_dir=getattr(args, "plot_dir", None))


def cmd_spam(args) -> None:
    """Run the stream and print the table, or serve (``spam serve``)."""
    from .app import build_serving_engine, run
    from .report import format_table

    config = _config(args)
    if getattr(args, "spam_command", None) == "serve":
        try:
            from ... import serving
        except ImportError as exc:
            raise SystemExit(f"gnnaccel spam serve: the HTTP service is not available ({exc})") from exc
        engine, info = build_serving_engine(config, args.model)
        print(f"serving the pruned {info['model']} YelpChi model over {info['nodes']} reviews on "
              f"http://{args.host}:{args.port}", file=sys.stderr, flush=True)
        serving.serve(engine, host=args.host, port=args.port)
        return
    result = run(config)
    print(format_table(result))
    if config.json_path:
        print(f"wrote {config.json_path}")
    for path in result.get("plots", []):
        print(f"wrote {path}")

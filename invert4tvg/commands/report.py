"""``invert4tvg report``: compare training runs and evaluations side by side (Markdown, PNG plots, HTML)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="Markdown report, plots and grounding visualisations from run / eval directories",
        description="Read any mix of training-run directories (metadata.json, metrics.jsonl, eval/) and "
        "evaluation directories (metrics.json, predictions.jsonl); aggregate seeds of the same setting; write "
        "OUT/report.md, OUT/summary.json, OUT/plots/*.png and OUT/grounding/index.html.",
    )
    parser.add_argument("dirs", nargs="+", metavar="RUN_OR_EVAL_DIR", help="run or evaluation directories")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--title", default="Invert4TVG evaluation report", help="report title")
    parser.add_argument(
        "--vis-items", type=int, default=8, help="test items to visualise (0: none; default 8)"
    )
    parser.add_argument("--vis-seed", type=int, default=0, help="seed of the item draw (default 0)")
    parser.add_argument(
        "--vis-runs", type=int, default=6, help="settings drawn per item, at most (default 6)"
    )
    parser.add_argument("--thumbnails", type=int, default=8, help="frame thumbnails per item (default 8)")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        help="setting the others are compared with (repeatable), query by query, with 95%% bootstrap CIs "
        "(default: time_r1 when present, else the first setting)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from invert4tvg.eval.report import build_report

    try:
        report = build_report(
            args.dirs,
            args.out,
            vis_items=args.vis_items,
            vis_seed=args.vis_seed,
            vis_runs=args.vis_runs,
            n_thumbs=args.thumbnails,
            title=args.title,
            references=args.reference,
        )
    except ValueError as err:
        print(f"invert4tvg report: {err}")
        return 2
    print(f"report: {report.markdown}")
    for name, path in report.plots.items():
        print(f"plot ({name}): {path}")
    if report.html is not None:
        print(f"grounding visualisation: {report.html}")
    if report.skipped:
        print(
            f"skipped {len(report.skipped)} director{'y' if len(report.skipped) == 1 else 'ies'} (see the report)"
        )
    return 0

"""``invert4tvg compare``: Time-R1 vs Invert4TVG vs Only-VC/AR/VD on the synthetic benchmark, several seeds."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from invert4tvg.workflows.compare import SETTINGS, TESTBEDS

    parser = subparsers.add_parser(
        "compare",
        help="the paper's comparison at laptop scale (what `make compare` runs)",
        description="From one shared warm start, train every setting with GRPO on a synthetic testbed with the "
        "same budget and several seeds, evaluate each (and the warm start) on the test split, and write the report "
        "with paired bootstrap CIs. Finished runs are kept, so an interrupted comparison continues.",
    )
    parser.add_argument("--out", default="runs/compare", help="where the runs go (default: runs/compare)")
    parser.add_argument("--report", default="docs/results/compare", help="where the report goes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=300, help="GRPO steps per run (default: 300)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default: 2)")
    parser.add_argument(
        "--num-videos", type=int, default=None, help="benchmark size (default: the testbed's, 600)"
    )
    parser.add_argument(
        "--testbed",
        default="lookalike",
        choices=list(TESTBEDS),
        help="lookalike (default): where grounding needs action understanding, from a two-stage warm start "
        "(docs/results/compare.md); demo: the demo's benchmark, where nothing separates (wave 1)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from invert4tvg.workflows.compare import run_compare

    path = run_compare(
        args.out,
        args.report,
        tuple(args.seeds),
        tuple(args.settings),
        args.steps,
        args.jobs,
        args.num_videos,
        args.testbed,
    )
    print(f"report: {path}")
    return 0

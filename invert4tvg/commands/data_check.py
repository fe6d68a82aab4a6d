"""``invert4tvg data check``: read a grounding dataset the way training will and report every problem."""

from __future__ import annotations

import argparse
import json
import sys

FORMAT_CHOICES = ("charades-sta", "tvg-json", "activitynet", "qvhighlights", "time-r1")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="dataset tools (check)", description="Dataset tools.")
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    check = commands.add_parser(
        "check",
        help="validate an annotation file and print a JSON summary",
        description="Read a dataset with the checks training applies and print a JSON summary on stdout: "
        "records, skipped samples with file, line/key and reason, counts per reason, clipped spans. Exits 1 when "
        "any sample was rejected, 2 when the file cannot be read at all.",
    )
    check.add_argument("--format", required=True, choices=FORMAT_CHOICES, help="annotation format")
    check.add_argument("--annotations", required=True, help="annotation file")
    check.add_argument(
        "--durations",
        nargs="+",
        default=None,
        metavar="PATH",
        help="duration map(s): Charades csv (id, length), JSON {id: seconds}, or 'ID SECONDS' lines",
    )
    check.add_argument("--video-dir", default=None, help="directory of video files; missing files are errors")
    check.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="seconds a span may overshoot the video and be clipped instead of rejected (default: 1.0)",
    )
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from invert4tvg.data.formats import DataError, load_records
    from invert4tvg.data.validation import DEFAULT_TOLERANCE

    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    try:
        result = load_records(
            args.format,
            args.annotations,
            durations=args.durations,
            video_dir=args.video_dir,
            on_error="skip",
            tolerance=tolerance,
        )
    except (DataError, OSError) as err:
        where = {"file": getattr(err, "file", args.annotations), "where": getattr(err, "where", "file")}
        reason = getattr(err, "reason", type(err).__name__)
        print(
            json.dumps(
                {
                    "format": args.format,
                    "annotations": args.annotations,
                    "fatal": {**where, "reason": reason, "message": str(err)},
                },
                indent=2,
            )
        )
        return 2
    print(json.dumps(result.report, indent=2))
    report = result.report
    if report["skipped"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in report["skipped_by_reason"].items())
        print(
            f"{report['skipped']} sample(s) rejected ({reasons}); {report['records']} usable", file=sys.stderr
        )
        return 1
    return 0

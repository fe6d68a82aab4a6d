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
        "records, skipped samples with file, line/key and reason, counts per reason, clipped spans, and (with "
        "--video-dir or video paths in the annotations) every video that cannot be decoded. Exits 1 when any "
        "sample was rejected or any video is unreadable, 2 when the file cannot be read at all.",
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
        "--no-decode",
        action="store_true",
        help="only check that video files exist; skip decoding each one (decoding costs about one read of every "
        "video, the only way to find truncated or corrupt files before training does)",
    )
    check.add_argument(
        "--workers",
        type=int,
        default=2,
        help="videos decoded at once (default: 2; FFmpeg threads within each)",
    )
    check.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="seconds a span may overshoot the video and be clipped instead of rejected (default: 1.0)",
    )
    check.add_argument(
        "--config",
        help="a training YAML: its video sampling (video_fps, video_min_frames, ..., the rules training decodes "
        "with) is applied to every video and clip (default: the defaults of those fields)",
    )
    check.add_argument(
        "--overshoot",
        choices=("drop", "clip", "keep"),
        default="drop",
        help="spans that end after the video: drop (training's default: clip up to --tolerance, reject more), "
        "clip (clip all), keep (as published: what evaluation does). Counted under 'overshoot' in any case",
    )
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from invert4tvg.config_checks import ConfigError
    from invert4tvg.data.formats import DataError, load_records
    from invert4tvg.data.validation import DEFAULT_TOLERANCE

    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    try:
        sampling = _sampling(args.config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        result = load_records(
            args.format,
            args.annotations,
            durations=args.durations,
            video_dir=args.video_dir,
            on_error="skip",
            tolerance=tolerance,
            overshoot=args.overshoot,
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
    report = result.report
    unreadable = (
        [] if args.no_decode else check_videos(result.records, report, args.workers, sampling, tolerance)
    )
    print(json.dumps(report, indent=2))
    over = report["overshoot"]
    if over["spans_past_end"] or over["dropped"]:
        print(
            f"{over['spans_past_end'] + over['dropped']} span(s) end after their video (up to "
            f"{over['max_seconds_past_end']:g} s; {over['spans_past_end_beyond_tolerance'] + over['dropped']} by "
            f"more than {over['tolerance']:g} s): --overshoot {over['policy']} clipped {over['clipped']}, dropped "
            f"{over['dropped']}, kept {over['kept_as_published']} as published; evaluation keeps them all",
            file=sys.stderr,
        )
    if report["skipped"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in report["skipped_by_reason"].items())
        print(
            f"{report['skipped']} sample(s) rejected ({reasons}); {report['records']} usable", file=sys.stderr
        )
    if not report["records"]:
        print(f"{args.annotations}: no usable sample: training would refuse this file", file=sys.stderr)
    for bad in unreadable:
        print(
            f"unreadable video {bad['video']} ({bad['samples']} sample(s)): {bad['reason']}", file=sys.stderr
        )
    if unreadable:
        print(
            f"{len(unreadable)} of {report['videos_decoded']} video(s) cannot be decoded: re-encode them "
            "(ffmpeg -i IN -c:v libx264 OUT.mp4) or remove their samples",
            file=sys.stderr,
        )
    for bad in report.get("duration_mismatches", []):
        print(
            f"duration of {bad['video']}: annotated {bad['annotated']:g} s, the video has {bad['decoded']:g} s "
            f"({bad['samples']} sample(s)); fix the duration (its spans are scored against it)",
            file=sys.stderr,
        )
    for bad in report.get("unusable_clips", []):
        print(f"clip of sample {bad['id']} ({bad['video']}): {bad['reason']}", file=sys.stderr)
    problems = unreadable or report.get("duration_mismatches") or report.get("unusable_clips")
    return 1 if report["skipped"] or problems or not report["records"] else 0


def _sampling(config: str | None):
    """The video sampling training would use: the config's video_* fields, else their defaults."""
    from invert4tvg.config import DataArguments, parse_config

    (data,) = parse_config((DataArguments,), ["--config", config] if config else [], ignore_unknown=True)
    return data.sampling()


def check_videos(records, report: dict, workers: int, sampling=None, tolerance: float = 1.0) -> list[dict]:
    """Decode every distinct video the records use, with training's rules: add ``videos_decoded``,
    ``unreadable_videos`` (a video training cannot read or sample: file, reason, samples that use it),
    ``duration_mismatches`` (annotated duration off the video's by more than ``tolerance`` seconds) and
    ``unusable_clips`` (a sample's ground-truth clip, the VC/AR/VD input, too short to sample) to ``report``;
    return the unreadable ones."""
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    from invert4tvg.data.frames import VideoSampling
    from invert4tvg.data.sampling import plan_sampling
    from invert4tvg.data.video import VideoDecodeError
    from invert4tvg.data.video_check import verify_video

    sampling = sampling or VideoSampling()

    uses = Counter(r.video for r in records if r.video)
    if not uses:
        report["videos_decoded"] = 0
        report["unreadable_videos"] = []
        if records:
            print("videos not checked: no --video-dir and no video paths in the annotations", file=sys.stderr)
        return []

    def check(path: str):
        try:
            info = verify_video(path)
            plan_sampling(
                info.frames, info.fps, info.height, info.width, sampling, None
            )  # as training plans it
        except VideoDecodeError as err:
            return {"video": path, "reason": err.reason, "samples": uses[path]}
        except ValueError as err:
            return {"video": path, "reason": f"training cannot sample it: {err}", "samples": uses[path]}
        return info

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PyAV decodes without the GIL
        results = dict(zip(sorted(uses), pool.map(check, sorted(uses))))
    unreadable = [r for r in results.values() if isinstance(r, dict)]
    mismatches: dict[str, dict] = {}
    clips = []
    for record in records:
        info = results.get(record.video)
        if info is None or isinstance(info, dict):
            continue
        if abs(record.duration - info.duration) > tolerance:
            bad = mismatches.setdefault(
                record.video,
                {
                    "video": record.video,
                    "annotated": record.duration,
                    "decoded": round(info.duration, 3),
                    "samples": 0,
                },
            )
            bad["samples"] += 1
            continue  # its spans are measured against a wrong duration: fix that first
        try:
            plan_sampling(
                info.frames, info.fps, info.height, info.width, sampling, (record.start, record.end)
            )
        except ValueError as err:
            clips.append({"id": record.id, "video": record.video, "reason": str(err)})
    report["videos_decoded"] = len(uses)
    report["unreadable_videos"] = unreadable
    report["duration_mismatches"] = list(mismatches.values())
    report["unusable_clips"] = clips[:200]
    report["unusable_clips_not_listed"] = max(0, len(clips) - 200)
    return unreadable

"""Loaders for the public grounding datasets' files, all producing :class:`GroundingRecord` s.

Formats (times in seconds everywhere):

- ``charades-sta``: ``charades_sta_{split}.txt``, lines ``VID START END##sentence``; durations from the
  Charades csv (``id`` and ``length`` columns) or any duration map (see :func:`load_durations`).
- ``tvg-json`` / ``activitynet``: ``{video_id: {"duration", "timestamps": [[s, e], ...], "sentences": [...]}}``
  (TimeZero, VideoChat-R1, Invert4TVG, the synthetic benchmark; ActivityNet Captions ``train.json``,
  ``val_1.json``, ``val_2.json``, whose sentences start with a space and whose files may lack the ``v_`` prefix).
- ``qvhighlights``: jsonl with ``qid, query, duration, vid, relevant_windows``; each window is one sample.
- ``time-r1``: a json list of ``{video, duration, timestamp: [s, e], sentence, qid?}``.

Every sample goes through :class:`~invert4tvg.data.validation.Validator`; see there for what is rejected.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from invert4tvg.data.records import GroundingRecord, to_dataset
from invert4tvg.data.validation import (
    DEFAULT_TOLERANCE,
    OVERSHOOT_POLICIES,
    REASONS,
    DataError,
    OnError,
    Overshoot,
    Raw,
    Validator,
    VideoIndex,
)

__all__ = ["FORMATS", "REASONS", "DataError", "LoadResult", "load_durations", "load_records"]

PathLike = str | os.PathLike[str]
DurationSource = PathLike | Mapping[str, float] | Iterable[PathLike] | None


@dataclass
class LoadResult:
    records: list[GroundingRecord]
    report: dict[str, Any]

    def dataset(self) -> datasets.Dataset:
        return to_dataset(self.records)


class _DupKeys(dict):
    """A JSON object that remembers keys it saw twice (``json`` keeps the last value silently)."""

    duplicates: list[str]


def _object_pairs(pairs: list[tuple[str, Any]]) -> _DupKeys:
    obj = _DupKeys()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; other bytes are a :class:`DataError` naming the line (not a UnicodeDecodeError)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            str(path),
            f"line {line}",
            "malformed",
            f"not UTF-8 text: byte 0x{data[err.start]:02x} at column {column}; re-save the file as UTF-8",
        ) from None


def _lines(path: Path) -> list[str]:
    """The file's lines, numbered as editors number them (only \\n ends a line)."""
    lines = _read_text(path).split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path), object_pairs_hook=_object_pairs)
    except json.JSONDecodeError as err:
        raise DataError(str(path), f"line {err.lineno}", "malformed", f"not valid JSON: {err.msg}") from err


def _pair(value: Any) -> tuple[Any, Any] | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        return value[0], value[1]
    return None


# -- the formats --------------------------------------------------------------------------------------------
def _charades_sta(path: Path, v: Validator) -> None:
    for lineno, line in enumerate(_lines(path), start=1):
        where = {"line": lineno}
        if not line.strip():
            v.blank_lines += 1
            continue
        head, sep, sentence = line.rstrip("\r\n").partition("##")
        fields = head.split()
        if not sep or len(fields) != 3:
            v.reject(where, "malformed", f"expected 'VID START END##sentence', got {line.strip()[:80]!r}")
            continue
        vid, start, end = fields
        identity = ("content", vid, start, end, sentence.strip().lower())
        if v.claim(where, identity, "the same video, span and sentence"):
            v.add(Raw(where, f"{vid}_{lineno}", vid, start, end, sentence))


def _tvg_json(path: Path, v: Validator) -> None:
    data = _read_json(path)
    if not isinstance(data, dict):
        hint = " (a list: is this --format time-r1?)" if isinstance(data, list) else ""
        raise DataError(str(path), "file", "malformed", f"expected a JSON object of videos{hint}")
    for vid in data.duplicates:
        v.reject(
            {"key": vid},
            "duplicate_id",
            "the video key occurs more than once; JSON keeps the last entry, the earlier ones are dropped",
        )
    for vid, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("timestamps"), list):
            v.reject(
                {"key": vid},
                "malformed",
                "expected {'duration', 'timestamps': [...], 'sentences': [...]}",
                samples=_entry_size(entry),
            )
            continue
        stamps, sentences = entry["timestamps"], entry.get("sentences")
        if not isinstance(sentences, list) or len(sentences) != len(stamps):
            n = len(sentences) if isinstance(sentences, list) else "no"
            v.reject(
                {"key": vid},
                "malformed",
                f"{len(stamps)} timestamps but {n} sentences",
                samples=_entry_size(entry),
            )
            continue
        for i, (stamp, sentence) in enumerate(zip(stamps, sentences)):
            where = {"key": vid, "index": i}
            span = _pair(stamp)
            if span is None:
                v.reject(where, "malformed", f"timestamp must be [start, end], got {stamp!r}")
                continue
            v.add(Raw(where, f"{vid}_{i}", vid, span[0], span[1], sentence, entry.get("duration")))


def _entry_size(entry: Any) -> int:
    """Samples a rejected video entry held: its longest list of timestamps or sentences (at least 1)."""
    if not isinstance(entry, dict):
        return 1
    sizes = [len(entry[k]) for k in ("timestamps", "sentences") if isinstance(entry.get(k), list)]
    return max([1, *sizes])


def _qvhighlights(path: Path, v: Validator) -> None:
    for lineno, line in enumerate(_lines(path), start=1):
        where = {"line": lineno}
        if not line.strip():
            v.blank_lines += 1
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            v.reject(where, "malformed", f"not valid JSON: {err.msg}")
            continue
        if not isinstance(item, dict) or "qid" not in item or "vid" not in item or "query" not in item:
            v.reject(
                where, "malformed", "expected an object with qid, query, duration, vid, relevant_windows"
            )
            continue
        windows = item.get("relevant_windows")
        if not windows:
            v.reject(where, "missing_span", f"qid {item['qid']} has no relevant_windows")
            continue
        if not isinstance(windows, list):
            v.reject(where, "malformed", f"relevant_windows must be a list of [start, end], got {windows!r}")
            continue
        if not v.claim(where, ("qid", str(item["qid"])), f"qid {item['qid']}"):
            continue
        for w, window in enumerate(windows):
            span = _pair(window)
            if span is None:
                v.reject(where, "malformed", f"window must be [start, end], got {window!r}")
                continue
            raw_id = f"{item['qid']}_{w}"
            v.add(Raw(where, raw_id, str(item["vid"]), span[0], span[1], item["query"], item.get("duration")))


def _time_r1(path: Path, v: Validator) -> None:
    data = _read_json(path)
    if not isinstance(data, list):
        hint = " (an object: is this --format tvg-json?)" if isinstance(data, dict) else ""
        raise DataError(str(path), "file", "malformed", f"expected a JSON list of samples{hint}")
    for i, item in enumerate(data):
        where = {"item": i}
        if not isinstance(item, dict) or not isinstance(item.get("video"), str) or "sentence" not in item:
            v.reject(where, "malformed", "expected an object with video, duration, timestamp, sentence")
            continue
        span = _pair(item.get("timestamp"))
        if span is None:
            v.reject(where, "malformed", f"timestamp must be [start, end], got {item.get('timestamp')!r}")
            continue
        ref = item["video"]
        vid = Path(ref).stem
        sample_id = str(item["qid"]) if item.get("qid") is not None else f"{vid}_{i}"
        v.add(
            Raw(
                where, sample_id, vid, span[0], span[1], item["sentence"], item.get("duration"), video_ref=ref
            )
        )


_LOADERS: dict[str, tuple[Callable[[Path, Validator], None], str]] = {
    "charades-sta": (_charades_sta, "charades-sta"),
    "tvg-json": (_tvg_json, "tvg-json"),
    "activitynet": (_tvg_json, "activitynet"),
    "qvhighlights": (_qvhighlights, "qvhighlights"),
    "time-r1": (_time_r1, "time-r1"),
}
FORMATS: tuple[str, ...] = tuple(_LOADERS)


# -- durations ----------------------------------------------------------------------------------------------
def load_durations(source: DurationSource) -> dict[str, Any]:
    """A ``{video_id: seconds}`` map from a mapping, one file, or several files (merged, later ones win).

    Files: the Charades csv (``id`` and ``length`` columns; ``duration`` also accepted), a JSON object mapping ids
    to seconds or to objects with a ``duration`` (so a tvg-json annotation file works), or a text file of
    ``VIDEO_ID SECONDS`` lines. Values are checked when a sample uses them.
    """
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return dict(source)
    paths = [source] if isinstance(source, str | os.PathLike) else list(source)
    out: dict[str, Any] = {}
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise DataError(str(path), "file", "missing_duration", "duration file not found")
        if path.suffix.lower() == ".csv":
            out.update(_durations_csv(path))
        elif path.suffix.lower() == ".json":
            data = _read_json(path)
            if not isinstance(data, dict):
                raise DataError(str(path), "file", "malformed", "a duration map must be a JSON object")
            for vid, value in data.items():
                out[vid] = value.get("duration") if isinstance(value, dict) else value
        else:
            for lineno, line in enumerate(_lines(path), start=1):
                parts = line.replace(",", " ").split()
                if len(parts) == 2:
                    out[parts[0]] = parts[1]
                elif parts:
                    raise DataError(str(path), f"line {lineno}", "malformed", "expected 'VIDEO_ID SECONDS'")
    return out


def _durations_csv(path: Path) -> dict[str, Any]:
    with io.StringIO(_read_text(path), newline="") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or [])
        id_col = next((c for c in ("id", "video_id", "vid", "video") if c in columns), None)
        len_col = next((c for c in ("length", "duration") if c in columns), None)
        if id_col is None or len_col is None:
            raise DataError(
                str(path),
                "line 1",
                "malformed",
                f"need an id column and a length/duration column, got {sorted(columns)}",
            )
        return {row[id_col]: row[len_col] for row in reader if row.get(id_col)}


# -- entry point --------------------------------------------------------------------------------------------
def load_records(
    fmt: str,
    annotations: PathLike,
    durations: DurationSource = None,
    video_dir: PathLike | None = None,
    on_error: OnError = "raise",
    source: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    overshoot: Overshoot = "drop",
) -> LoadResult:
    """Read ``annotations`` in format ``fmt`` into records, checking every sample.

    ``on_error="raise"`` (the default) stops at the first bad sample with a :class:`DataError` naming the file,
    line or key and reason; ``"skip"`` drops bad samples and counts them in ``report`` by reason. A file that
    cannot be read at all raises either way. ``video_dir`` resolves video files (``<id>.mp4`` and the other usual
    extensions, searched recursively); without it records keep ``video=""`` unless the file names a path.
    ``overshoot`` decides what happens to spans that leave the video (drop | clip | keep, see
    :mod:`invert4tvg.data.validation`); the report's ``overshoot`` section counts them either way.
    """
    if fmt not in _LOADERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if overshoot not in OVERSHOOT_POLICIES:
        raise ValueError(f"overshoot must be one of {', '.join(OVERSHOOT_POLICIES)}, got {overshoot!r}")
    path = Path(annotations)
    if not path.is_file():
        raise DataError(str(path), "file", "malformed", "annotation file not found")
    loader, default_source = _LOADERS[fmt]
    try:
        videos = VideoIndex(video_dir) if video_dir is not None else None
    except FileNotFoundError as err:
        raise DataError(str(video_dir), "file", "missing_video", str(err)) from err
    validator = Validator(
        file=str(path),
        source=source or default_source,
        on_error=on_error,
        durations=load_durations(durations),
        videos=videos,
        tolerance=tolerance,
        overshoot=overshoot,
    )
    loader(path, validator)
    report = {
        "format": fmt,
        "annotations": str(path),
        "video_dir": None if video_dir is None else str(video_dir),
        "tolerance": tolerance,
        **validator.report(),
    }
    return LoadResult(validator.records, report)

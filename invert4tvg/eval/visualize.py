"""Grounding visualisations: for sampled test items, ground truth vs predicted spans on a timeline under a strip of
frame thumbnails, one PNG per item, and one static HTML page that lists the items and shows the PNGs.

Several runs can be drawn on the same items (one timeline row each), so settings are compared on the same clips.
Thumbnails are decoded with the project's video pipeline; when a video file cannot be found or decoded the
timeline is still drawn and the figure says why the thumbnails are missing.
"""

from __future__ import annotations

import html
import logging
import random
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patheffects

from invert4tvg.eval.runs import read_jsonl

log = logging.getLogger(__name__)

GT_COLOR = "#2ca02c"
PRED_COLOR = "#1f77b4"
FAIL_COLOR = "#d62728"
THUMB_PIXELS = 128 * 128  # per-thumbnail pixel budget handed to the decoder


@dataclass
class Prediction:
    label: str  # the run it comes from
    pred: tuple[float, float] | None
    iou: float | None
    output: str
    tasks: dict[str, Any] = field(default_factory=dict)


@dataclass
class VisItem:
    id: str
    query: str
    video: str
    duration: float
    source: str
    gt: tuple[float, float]
    predictions: list[Prediction]
    base_dirs: list[Path]  # where a relative video path may be rooted (predictions dir, dataset dir)


def _span(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"expected a [start, end] pair, got {value!r}")
    return float(value[0]), float(value[1])


def _load_predictions(path: Path, warnings: list[str]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(read_jsonl(path, warnings)):
        if "id" not in row or "gt" not in row:
            warnings.append(f"{path}: prediction {i + 1} has no 'id' or 'gt'; skipped")
            continue
        rows[str(row["id"])] = row
    return rows


def sample_items(
    runs: Sequence[tuple[str, Path]],
    k: int = 8,
    seed: int = 0,
    warnings: list[str] | None = None,
    video_dirs: Sequence[Path] = (),
) -> list[VisItem]:
    """``k`` items drawn with ``seed`` from the ids all runs predicted (sorted, so the draw is reproducible).

    ``runs`` are ``(label, predictions.jsonl path)`` pairs; every item carries one prediction per run. Relative
    video paths are looked up under the first predictions file's directory, then under ``video_dirs``.
    """
    warnings = [] if warnings is None else warnings
    tables = [(label, path, _load_predictions(path, warnings)) for label, path in runs]
    tables = [t for t in tables if t[2]]
    if not tables:
        return []
    common = set(tables[0][2])
    for _, _, rows in tables[1:]:
        common &= set(rows)
    if not common:
        warnings.append("the prediction files share no item id; items are drawn from the first run only")
        common = set(tables[0][2])
    ids = random.Random(seed).sample(sorted(common), min(k, len(common)))
    items = []
    for item_id in ids:
        first = tables[0][2][item_id]
        preds = []
        for label, path, rows in tables:
            row = rows.get(item_id)
            if row is None:
                continue
            try:
                pred = _span(row.get("pred"))
            except ValueError as err:
                warnings.append(f"{path}: item {item_id}: 'pred' {err}; drawn as a parse failure")
                pred = None
            iou = row.get("iou")
            preds.append(
                Prediction(
                    label,
                    pred,
                    None if iou is None else float(iou),
                    str(row.get("output", "")),
                    dict(row.get("tasks") or {}),
                )
            )
        gt = _span(first["gt"])
        duration = float(first.get("duration") or 0.0) or max(
            gt[1], *(p.pred[1] for p in preds if p.pred), 1.0
        )
        items.append(
            VisItem(
                item_id,
                str(first.get("query", "")),
                str(first.get("video", "")),
                duration,
                str(first.get("source", "")),
                gt,
                preds,
                [tables[0][1].parent, *video_dirs],
            )
        )
    return items


def resolve_video(video: str, base_dirs: Sequence[Path]) -> Path | None:
    """The video file: as given (absolute or relative to the working directory), else relative to ``base_dirs``."""
    if not video:
        return None
    candidates = [Path(video)] + [Path(b) / video for b in base_dirs]
    return next((c for c in candidates if c.is_file()), None)


def load_thumbnails(path: Path | None, duration: float, n: int = 8) -> tuple[np.ndarray, np.ndarray] | str:
    """``(frames, timestamps)`` of about ``n`` frames spread over the video, or the reason there are none."""
    if path is None:
        return "video file not found"
    try:
        from invert4tvg.data.frames import VideoSampling, VideoSpec
        from invert4tvg.data.video import decode_video
    except ImportError as err:
        return f"video decoder unavailable ({err})"
    n = max(4, n - n % 2)
    sampling = VideoSampling(
        fps=n / max(duration, 1e-3),
        min_frames=4,
        max_frames=n,
        total_pixels=n * THUMB_PIXELS,
        min_pixels=56 * 56,
        max_pixels=THUMB_PIXELS,
    )
    try:
        decoded = decode_video(VideoSpec(str(path), clip=None, sampling=sampling))
    except Exception as err:  # any decoding failure only costs the thumbnails, never the report
        log.warning("thumbnails of %s: %s", path, err)
        return f"could not decode {path.name}: {type(err).__name__}"
    return np.asarray(decoded.frames), np.asarray(decoded.timestamps, dtype=float)


def draw_item(item: VisItem, out: Path, thumbs: tuple[np.ndarray, np.ndarray] | str) -> Path:
    """One figure: thumbnails on a time axis, then a timeline row for the ground truth and for each prediction."""
    rows = 1 + len(item.predictions)
    has_thumbs = not isinstance(thumbs, str)
    width = 11.0
    strip_h = 1.5
    if has_thumbs:
        frames = thumbs[0]
        # Height that keeps the thumbnails' aspect ratio when each takes 1/T of the plot width.
        strip_h = min(2.2, max(0.8, 0.8 * width / len(frames) * frames.shape[1] / frames.shape[2]))
    timeline_h = 0.45 * rows + 0.7
    caption = textwrap.fill(f"query: “{item.query}”", 110)
    head_h = 0.55 + 0.22 * caption.count("\n")
    fig, (ax_img, ax_tl) = plt.subplots(
        2,
        1,
        figsize=(width, head_h + strip_h + timeline_h + 0.2),
        sharex=True,
        gridspec_kw={"height_ratios": [strip_h, timeline_h]},
    )
    dur = item.duration
    if has_thumbs:
        frames, stamps = thumbs
        # Equal slots across the axis (frames are sampled evenly, so slot i is close to frame i's time); each
        # thumbnail is labelled with its exact timestamp.
        slot = dur / len(frames)
        for i, (frame, t) in enumerate(zip(frames, stamps)):
            ax_img.imshow(
                frame, extent=(i * slot, (i + 1) * slot, 0, 1), aspect="auto", interpolation="bilinear"
            )
            ax_img.text(
                i * slot + 0.03 * slot,
                0.04,
                f"{t:.1f} s",
                fontsize=6,
                color="white",
                va="bottom",
                path_effects=[patheffects.withStroke(linewidth=1.5, foreground="black")],
            )
    else:
        ax_img.set_facecolor("#f2f2f2")
        ax_img.text(
            dur / 2,
            0.5,
            f"no thumbnails: {thumbs}\n({item.video or 'no video path'})",
            ha="center",
            va="center",
            fontsize=9,
            color="#555555",
        )
    # The ground-truth span as a band under the thumbnails, and as guides through the timeline.
    ax_img.axhspan(-0.14, -0.03, xmin=item.gt[0] / dur, xmax=min(item.gt[1] / dur, 1.0), color=GT_COLOR)
    ax_img.set_ylim(-0.15, 1)
    ax_img.set_yticks([])
    ax_img.set_xlim(0, dur)
    for t in item.gt:
        ax_tl.axvline(t, color=GT_COLOR, linewidth=1, linestyle="--", alpha=0.7)

    labels = [f"ground truth  [{item.gt[0]:.1f}, {item.gt[1]:.1f}] s"]
    ax_tl.barh(0, item.gt[1] - item.gt[0], left=item.gt[0], height=0.6, color=GT_COLOR)
    for row, p in enumerate(item.predictions, start=1):
        if p.pred is None:
            ax_tl.text(
                dur / 2,
                row,
                "no span parsed from the answer (parse failure, IoU 0)",
                ha="center",
                va="center",
                fontsize=8,
                color=FAIL_COLOR,
            )
            labels.append(f"{p.label}  (parse failure)")
            continue
        s, e = p.pred
        if e > s:
            ax_tl.barh(row, e - s, left=s, height=0.6, color=PRED_COLOR, alpha=0.85)
        else:  # a reversed or empty span is still shown, as a marker at its start
            ax_tl.plot([s], [row], marker="|", markersize=14, color=FAIL_COLOR)
        iou = "?" if p.iou is None else f"{p.iou:.2f}"
        labels.append(f"{p.label}  [{s:.1f}, {e:.1f}] s, IoU {iou}")
    ax_tl.set_yticks(range(rows), labels, fontsize=8)
    ax_tl.set_ylim(rows - 0.5, -0.5)
    ax_tl.set_xlim(0, dur)
    ax_tl.set_xlabel("time (s)")
    ax_tl.grid(axis="x", alpha=0.3)
    title = f"{item.id}  ·  {item.source or 'unknown source'}  ·  {dur:.1f} s"
    if len(item.predictions) == 1 and item.predictions[0].iou is not None:
        title += f"  ·  IoU {item.predictions[0].iou:.2f}"
    fig.suptitle(title + "\n" + caption, fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _fmt_span(span: tuple[float, float] | None) -> str:
    return "parse failure" if span is None else f"[{span[0]:.1f}, {span[1]:.1f}]"


def write_html(
    items: Sequence[VisItem], images: Sequence[Path], out: Path, notes: Sequence[str] = ()
) -> Path:
    """One static page: a table of the items (spans and IoU per run) and every figure, by relative path."""
    labels = list(dict.fromkeys(p.label for it in items for p in it.predictions))
    esc = html.escape
    head = "".join(f"<th>{esc(lab)}<br><small>pred (IoU)</small></th>" for lab in labels)
    body = []
    for i, item in enumerate(items):
        by_label = {p.label: p for p in item.predictions}
        cells = []
        for lab in labels:
            p = by_label.get(lab)
            if p is None:
                cells.append("<td>–</td>")
                continue
            iou = "" if p.iou is None else f" ({p.iou:.2f})"
            cls = ' class="fail"' if p.pred is None else ""
            cells.append(f"<td{cls}>{esc(_fmt_span(p.pred))}{iou}</td>")
        body.append(
            f"<tr><td><a href='#item{i}'>{i + 1}</a></td><td>{esc(item.id)}</td><td>{esc(item.query)}</td>"
            f"<td>{esc(_fmt_span(item.gt))}</td>{''.join(cells)}</tr>"
        )
    figures = []
    for i, (item, img) in enumerate(zip(items, images)):
        outputs = "".join(
            f"<details><summary>{esc(p.label)}: raw answer</summary><pre>{esc(p.output[:2000])}</pre></details>"
            for p in item.predictions
        )
        figures.append(
            f"<section id='item{i}'><h3>{i + 1}. {esc(item.id)}</h3><p>{esc(item.query)}</p>"
            f"<img src='{esc(img.relative_to(out.parent).as_posix())}' alt='timeline of {esc(item.id)}'>"
            f"{outputs}</section>"
        )
    note_html = "".join(f"<li>{esc(n)}</li>" for n in notes)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Grounding visualisation</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 1200px; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; }}
td.fail {{ color: #d62728; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
pre {{ white-space: pre-wrap; background: #f6f6f6; padding: 0.5em; }}
</style></head><body>
<h1>Grounding visualisation</h1>
<p>{len(items)} sampled test items. Green: ground-truth span; blue: predicted span; times in seconds.</p>
<ul>{note_html}</ul>
<table><tr><th>#</th><th>id</th><th>query</th><th>ground truth</th>{head}</tr>
{"".join(body)}
</table>
{"".join(figures)}
</body></html>
"""
    out.write_text(page)
    return out


def visualize_grounding(
    runs: Sequence[tuple[str, Path]],
    out_dir: Path,
    k: int = 8,
    seed: int = 0,
    n_thumbs: int = 8,
    video_dirs: Sequence[Path] = (),
) -> tuple[Path | None, list[str]]:
    """Draw ``k`` sampled items of ``runs`` (``(label, predictions.jsonl)``) into ``out_dir``.

    ``video_dirs``: where relative video paths may be rooted besides the predictions file's directory (the
    dataset directory). Returns the HTML page (None when there was nothing to draw) and warnings about what was
    skipped.
    """
    warnings: list[str] = []
    items = sample_items(runs, k=k, seed=seed, warnings=warnings, video_dirs=video_dirs)
    if not items:
        return None, [*warnings, "no predictions to visualise"]
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("item_*.png"):  # figures of an earlier report into the same directory
        stale.unlink()
    images = []
    for i, item in enumerate(items):
        thumbs = load_thumbnails(resolve_video(item.video, item.base_dirs), item.duration, n_thumbs)
        if isinstance(thumbs, str):
            warnings.append(f"item {item.id}: {thumbs} ({item.video or 'no video path'})")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in item.id)[:60]
        images.append(draw_item(item, out_dir / f"item_{i:02d}_{safe}.png", thumbs))
    page = write_html(items, images, out_dir / "index.html", notes=warnings)
    return page, warnings

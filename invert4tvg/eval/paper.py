"""The Invert4TVG paper's published numbers (``paper_results.json``) and which of our runs they may sit next to.

A published number is shown beside a run only when the setting matches: same dataset (Charades-STA), same model
size, same inversion tasks, same p and the same inversion reward. Everything else (the synthetic benchmark, the
tiny model) gets the published numbers in a separate table labelled as a different setting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from invert4tvg.eval.runs import RunGroup, model_size, normalize_dataset

PAPER_RESULTS = Path(__file__).with_name("paper_results.json")


@dataclass(frozen=True)
class PaperEntry:
    id: str
    source: str
    method: str
    dataset: str
    model_size: str | None
    metrics: dict[str, float | None]
    match: dict[str, Any] | None
    note: str | None = None

    def format_metrics(self, keys: tuple[str, ...]) -> list[str]:
        return ["–" if self.metrics.get(k) is None else f"{self.metrics[k]:.1f}" for k in keys]


@cache
def load_paper_results(path: Path = PAPER_RESULTS) -> tuple[dict[str, Any], tuple[PaperEntry, ...]]:
    """The file's header (paper, transcription notes, what could not be read) and its entries."""
    data = json.loads(Path(path).read_text())
    entries = tuple(
        PaperEntry(
            id=e["id"],
            source=e["source"],
            method=e["method"],
            dataset=e["dataset"],
            model_size=e.get("model_size"),
            metrics=dict(e["metrics"]),
            match=e.get("match"),
            note=e.get("note"),
        )
        for e in data["entries"]
    )
    header = {k: v for k, v in data.items() if k != "entries"}
    return header, entries


def _matches(match: dict[str, Any], attrs: dict[str, Any]) -> bool:
    dataset = normalize_dataset(attrs.get("dataset"))
    if not dataset or normalize_dataset(match["dataset"]) not in dataset:
        return False
    if model_size(attrs.get("model")) != match["model_size"]:
        return False
    if tuple(sorted(match["invert_tasks"])) != tuple(attrs.get("invert_tasks") or ()):
        return False
    p = attrs.get("p")
    if p is None or abs(float(p) - float(match["p"])) > 1e-6:
        return False
    # The inversion reward only matters when there are inversion tasks.
    return not match["invert_tasks"] or (attrs.get("reward") or "binary") == match["reward"]


def matching_entry(group: RunGroup, entries: tuple[PaperEntry, ...] | None = None) -> PaperEntry | None:
    """The published result for exactly this group's setting, if the paper has one."""
    if entries is None:
        entries = load_paper_results()[1]
    for entry in entries:
        if entry.match and _matches(entry.match, group.attrs):
            return entry
    return None


def entries_for_groups(
    groups: list[RunGroup], entries: tuple[PaperEntry, ...] | None = None
) -> list[PaperEntry]:
    """Published entries for the same task mixes as ``groups`` (for the 'different setting' table)."""
    if entries is None:
        entries = load_paper_results()[1]
    task_sets = {tuple(g.attrs.get("invert_tasks") or ()) for g in groups}
    sweep = any(not t or t == ("ar", "vc", "vd") for t in task_sets)
    wanted: list[PaperEntry] = []
    for entry in entries:
        same_tasks = entry.match is not None and tuple(sorted(entry.match["invert_tasks"])) in task_sets
        if same_tasks or (entry.id.startswith("f5_") and sweep):
            wanted.append(entry)
    return wanted

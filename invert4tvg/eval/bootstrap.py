"""Is one setting better than another? Paired bootstrap over test queries, seeds pooled.

Every run of a comparison is evaluated on the same test queries, so settings are compared query by query: for each
query, a setting's score is the mean over its seeds (the query's IoU, its R1@m hit, its VC/AR/VD reward), the
difference between two settings is taken per query, and the queries are resampled with replacement to give a
percentile confidence interval of the mean difference. Pairing removes the spread between easy and hard queries,
which dominates an unpaired comparison of two means; averaging seeds first keeps each query one unit of the
resampling, so seed noise shrinks the interval only as far as it actually averages out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from invert4tvg.eval.metrics import GROUNDING_KEYS, INVERSION_TASKS, THRESHOLDS, hits_threshold, recall_key
from invert4tvg.eval.runs import RunGroup, RunResult

DIFF_KEYS: tuple[str, ...] = (*GROUNDING_KEYS, *(t.upper() for t in INVERSION_TASKS))


@dataclass(frozen=True)
class Difference:
    """``a`` minus ``b`` in percentage points over ``n`` shared queries, with a ``level`` confidence interval."""

    key: str
    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    @property
    def resolved(self) -> bool:
        """The interval excludes 0: the sign of the difference is resolved at this level."""
        return self.low > 0 or self.high < 0

    def format(self) -> str:
        mark = " *" if self.resolved else ""
        return f"{self.mean:+.1f} [{self.low:+.1f}, {self.high:+.1f}]{mark}"


def query_scores(run: RunResult) -> dict[str, dict[str, float]]:
    """Per metric, per query id: this run's score in percent (parse failure = 0, unscorable inversion task
    left out). Empty when the run kept no ``predictions.jsonl``."""
    if run.predictions_path is None:
        return {}
    strict = bool(run.strict)
    out: dict[str, dict[str, float]] = {k: {} for k in DIFF_KEYS}
    with open(run.predictions_path) as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            qid = str(row["id"])
            iou = row.get("iou")
            out["mIoU"][qid] = 100.0 * float(iou or 0.0)
            for m in THRESHOLDS:
                out[recall_key(m)][qid] = 100.0 * hits_threshold(iou, m, strict)
            for task, result in (row.get("tasks") or {}).items():
                if task.upper() in out and result.get("reward") is not None:
                    out[task.upper()][qid] = 100.0 * float(result["reward"])
    return out


def pooled_scores(group: RunGroup) -> dict[str, dict[str, float]]:
    """Per metric, per query: the mean over the group's seeds, for queries every seed scored."""
    per_run = [s for s in (query_scores(r) for r in group.runs) if s]
    pooled: dict[str, dict[str, float]] = {}
    for key in DIFF_KEYS:
        shared = set.intersection(*(set(s[key]) for s in per_run)) if per_run else set()
        pooled[key] = {q: float(np.mean([s[key][q] for s in per_run])) for q in shared}
    return pooled


def paired_difference(
    a: dict[str, float],
    b: dict[str, float],
    key: str,
    resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> Difference | None:
    """Mean of ``a[q] - b[q]`` over shared queries with a percentile bootstrap interval; None without overlap."""
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    diffs = np.array([a[q] - b[q] for q in shared])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[idx].mean(axis=1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Difference(key, float(diffs.mean()), float(low), float(high), len(shared), level)


def compare_groups(
    a: RunGroup, b: RunGroup, keys: Sequence[str] = DIFF_KEYS, **options
) -> dict[str, Difference]:
    """``a`` minus ``b`` for every key both scored."""
    pa, pb = pooled_scores(a), pooled_scores(b)
    out = {}
    for key in keys:
        diff = paired_difference(pa.get(key, {}), pb.get(key, {}), key, **options)
        if diff is not None:
            out[key] = diff
    return out


def reference_group(groups: Sequence[RunGroup], name: str | None = None) -> RunGroup | None:
    """The group the others are compared with: ``name`` (a label or setting), else Time-R1 when present, else
    the first group."""
    if not groups:
        return None
    wanted = name or "time_r1"
    for g in groups:
        if wanted in (g.label, g.setting):
            return g
    if name:
        raise ValueError(f"no setting named {name!r}; settings: {[g.label for g in groups]}")
    return groups[0]


def differences_section(groups: Sequence[RunGroup], references: Sequence[str] = ()) -> list[str]:
    """Markdown: one table per reference setting (default: the one :func:`reference_group` picks), every other
    setting minus it, with 95% CIs."""
    if len(groups) < 2:
        return []
    lines: list[str] = []
    for name in references or (None,):
        table = _differences_table(groups, reference_group(groups, name))
        lines += table + ([""] if table else [])
    return lines[:-1]


def _differences_table(groups: Sequence[RunGroup], ref: RunGroup) -> list[str]:
    rows = []
    for g in groups:
        if g is ref:
            continue
        diffs = compare_groups(g, ref)
        if not diffs:
            continue
        n = max(d.n for d in diffs.values())
        rows.append([g.label, str(n), *(diffs[k].format() if k in diffs else "–" for k in DIFF_KEYS)])
    if not rows:
        return []
    header = ["setting", "queries", *DIFF_KEYS]
    lines = [
        f"## Differences from {ref.label}",
        "",
        "Percentage points, setting minus reference, with 95% confidence intervals from a paired bootstrap over "
        "test queries (10,000 resamples; each query's score averaged over the setting's seeds first). `*`: the "
        "interval excludes 0.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def write_differences(groups: Sequence[RunGroup], path: Path, references: Sequence[str] = ()) -> None:
    """The same numbers as JSON, for scripts: ``{reference: {setting: {metric: difference}}}``."""
    data = {}
    for name in references or (None,):
        ref = reference_group(groups, name)
        data[ref.label] = {
            g.label: {k: vars(d) for k, d in compare_groups(g, ref).items()} for g in groups if g is not ref
        }
    path.write_text(json.dumps(data, indent=2) + "\n")

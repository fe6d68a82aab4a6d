"""Side-by-side report of training runs and evaluations: Markdown tables, PNG plots, grounding visualisations.

``build_report(dirs, out)`` writes into ``out``:

- ``report.md``: settings compared (mean ± std over seeds), every run, per-source breakdowns, the plots, the
  published numbers (beside a setting only when it matches the paper's; otherwise in a separate table);
- ``summary.json``: the same aggregates, machine-readable;
- ``plots/*.png``: training curves, the p sweep, ablation bars (each only when the inputs allow it);
- ``grounding/index.html`` + ``grounding/*.png``: sampled test items, ground truth vs predictions.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invert4tvg.eval.bootstrap import differences_section, write_differences
from invert4tvg.eval.metrics import ACTION_KEYS, GROUNDING_KEYS, METRIC_KEYS, SeedStats, aggregate_metrics
from invert4tvg.eval.paper import PaperEntry, entries_for_groups, load_paper_results, matching_entry
from invert4tvg.eval.runs import ReportInputError, RunGroup, RunResult, group_runs, load_dirs

log = logging.getLogger(__name__)

PAPER_KEYS = ("R1@0.3", "R1@0.5", "R1@0.7", "mIoU")


@dataclass
class Report:
    """What ``build_report`` wrote, and what it had to leave out."""

    markdown: Path
    summary: Path
    plots: dict[str, Path] = field(default_factory=dict)
    html: Path | None = None
    groups: list[RunGroup] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _cell(stats: SeedStats) -> str:
    return stats.format(1)


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in [header, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return lines


def _metric_definition(runs: Sequence[RunResult]) -> list[str]:
    # None: validation results from a training log, which do not say; the evaluator's default is >=.
    stricts = {r.strict for r in runs if r.metrics is not None and r.strict is not None}
    if stricts == {True}:
        rule = "IoU > m (strict, Time-R1's convention)"
    elif stricts <= {False}:
        rule = "IoU ≥ m"
    else:
        rule = "IoU ≥ m, or IoU > m where marked strict (runs use different conventions: compare with care)"
    return [
        f"R1@m: percentage of test items whose predicted span has {rule}. mIoU: mean IoU. Both in percent; an answer "
        "with no readable span scores IoU 0 and stays in the denominator.",
        "VC / AR / VD: accuracy (percent) of verb completion, action recognition and video description on the "
        "ground-truth clips of the same test split (the paper's Figure 1 right). '–': not measured.",
        "Parser (Runs table): how the span was read. answer: the last 'A to B' of the last <answer> block (the iou "
        "reward's reading); time-r1: the last 'A to B' anywhere in the output (Time-R1's public evaluation). The "
        "two give different numbers on the same outputs: compare runs read by the same parser.",
    ]


def _settings_section(groups: Sequence[RunGroup], entries: tuple[PaperEntry, ...]) -> list[str]:
    matches = {g.label: matching_entry(g, entries) for g in groups}
    show_paper = any(matches.values())
    header = ["setting", "n", *GROUNDING_KEYS, *ACTION_KEYS]
    if show_paper:
        header.append("published, same setting: R1@0.3 / 0.5 / 0.7 (source)")
    rows = []
    all_stats = [aggregate_metrics([r.metrics or {} for r in g.runs]) for g in groups]
    # The best mean of each column in bold, when there is something to compare.
    best = {}
    for k in METRIC_KEYS:
        means = [s[k].mean for s in all_stats if s[k].mean is not None]
        if len(means) >= 2:
            best[k] = max(means)
    for g, stats in zip(groups, all_stats):
        n = max(s.n for s in stats.values())
        cells = [
            f"**{_cell(stats[k])}**" if k in best and stats[k].mean == best[k] else _cell(stats[k])
            for k in METRIC_KEYS
        ]
        row = [g.label, str(n), *cells]
        if show_paper:
            e = matches[g.label]
            row.append("" if e is None else " / ".join(e.format_metrics(PAPER_KEYS[:3])) + f" ({e.source})")
        rows.append(row)
    lines = [
        "## Settings compared",
        "",
        "Mean ± sample std over seeds (n = runs with results); the best mean of each column in bold.",
        "",
    ]
    lines += _table(header, rows)
    lines += ["", "What each setting is:", ""]
    rows = []
    for g in groups:
        a = g.attrs
        tasks = "+".join(t.upper() for t in a["invert_tasks"]) or (
            "none (TVG only)" if a["p"] is not None else "–"
        )
        seeds = ", ".join("?" if s is None else str(s) for s in g.seeds)
        p = "–" if a["p"] is None else f"{a['p']:g}"
        rows.append(
            [
                g.label,
                str(a["model"]),
                str(a["dataset"]),
                str(a["split"] or "val (during training)"),
                p,
                tasks,
                str(a["reward"] or "–"),
                seeds,
            ]
        )
    lines += _table(
        ["setting", "model", "dataset", "split", "p", "inversion tasks", "inv. reward", "seeds"], rows
    )
    if show_paper:
        lines += [
            "",
            "The published column is the Invert4TVG paper's number for the same dataset, model size, tasks, "
            "p and reward; the paper counts R1@m with IoU > m.",
        ]
    return lines


def _runs_section(runs: Sequence[RunResult]) -> list[str]:
    rows = []
    for r in runs:
        m = r.metrics or {}
        counts = m.get("counts") or {}
        rows.append(
            [
                r.name,
                r.setting,
                "–" if r.seed is None else str(r.seed),
                *(_num(m.get(k)) for k in METRIC_KEYS),
                r.parser or "–",
                str(counts.get("samples", "–")),
                str(counts.get("parse_failures", "–")),
                r.metrics_source or "no results",
            ]
        )
    header = ["run", "setting", "seed", *METRIC_KEYS, "parser", "samples", "parse failures", "metrics from"]
    return ["## Runs", "", *_table(header, rows)]


def _per_source_section(runs: Sequence[RunResult]) -> list[str]:
    rows = []
    for r in runs:
        for source, m in sorted(((r.metrics or {}).get("per_source") or {}).items()):
            rows.append(
                [r.name, source, *(_num(m.get(k)) for k in GROUNDING_KEYS), str(m.get("samples", "–"))]
            )
    if not rows:
        return []
    return ["## Per source dataset", "", *_table(["run", "source", *GROUNDING_KEYS, "samples"], rows)]


def _published_section(
    groups: Sequence[RunGroup], entries: tuple[PaperEntry, ...], header: dict
) -> list[str]:
    unmatched = [g for g in groups if matching_entry(g, entries) is None]
    if not unmatched:
        return []
    shown = entries_for_groups(unmatched, entries)
    if not shown:
        return []
    rows = [
        [e.source, e.method, e.dataset, e.model_size or "–", *e.format_metrics(PAPER_KEYS)] for e in shown
    ]
    lines = [
        "## Published numbers (different setting: not comparable)",
        "",
        "These settings were run on "
        + ", ".join(sorted({f"{g.attrs['dataset']} with {g.attrs['model']}" for g in unmatched}))
        + ". The paper's numbers below are for Charades-STA with Qwen2.5-VL-3B/7B (R1@m counted as IoU > m) and "
        "are listed for orientation only: read the trends, not the values.",
        "",
        *_table(["source", "method", "dataset", "model", *PAPER_KEYS], rows),
    ]
    missing = header.get("not_readable") or []
    if missing:
        lines += ["", "Not available from the paper's text:", "", *(f"- {m}" for m in missing)]
    return lines


def _summary_json(groups: Sequence[RunGroup], entries: tuple[PaperEntry, ...]) -> dict[str, Any]:
    out = []
    for g in groups:
        stats = aggregate_metrics([r.metrics or {} for r in g.runs])
        entry = matching_entry(g, entries)
        out.append(
            {
                "label": g.label,
                "attrs": {k: list(v) if isinstance(v, tuple) else v for k, v in g.attrs.items()},
                "runs": [
                    {
                        "name": r.name,
                        "path": str(r.path),
                        "seed": r.seed,
                        "metrics": {k: (r.metrics or {}).get(k) for k in METRIC_KEYS},
                    }
                    for r in g.runs
                ],
                "metrics": {k: {"mean": s.mean, "std": s.std, "n": s.n} for k, s in stats.items()},
                "published": None
                if entry is None
                else {"id": entry.id, "source": entry.source, "metrics": entry.metrics},
            }
        )
    return {"groups": out}


def build_report(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    vis_items: int = 8,
    vis_seed: int = 0,
    vis_runs: int = 6,
    n_thumbs: int = 8,
    title: str = "Invert4TVG evaluation report",
    references: Sequence[str] = (),
) -> Report:
    """Read ``inputs`` (any mix of run and evaluation directories) and write the report into ``out_dir``.

    ``references``: settings every other setting is compared with query by query (paired bootstrap CIs,
    :mod:`invert4tvg.eval.bootstrap`); default Time-R1 when present, else the first setting."""
    from invert4tvg.eval import plots
    from invert4tvg.eval.visualize import visualize_grounding

    out_dir = Path(out_dir)
    runs, skipped = load_dirs(inputs)
    if not runs:
        raise ValueError(
            "no usable run or evaluation directory:\n  " + "\n  ".join(skipped or ["(none given)"])
        )
    warnings = [w for r in runs for w in r.warnings]
    groups = group_runs(runs)
    for g in groups:  # two runs of one seed are one sample counted twice: n = 2 with a spread of 0
        by_seed: dict[Any, list[str]] = {}
        for r in g.runs:
            if r.seed is not None:
                by_seed.setdefault(r.seed, []).append(str(r.path))
        for seed, paths in by_seed.items():
            if len(paths) > 1:
                raise ReportInputError(
                    f"setting {g.label}: {' and '.join(paths)} both have seed {seed}; averaging them would count "
                    "one seed twice. Pass one of them, or give them different settings (`setting:` in the "
                    "config, `invert4tvg eval --setting`)"
                )
    header, entries = load_paper_results()
    out_dir.mkdir(parents=True, exist_ok=True)

    plot_dir = out_dir / "plots"
    for name in (
        "training_curves",
        "p_sweep",
        "ablation",
    ):  # a plot an earlier report made but this one may not
        (plot_dir / f"{name}.png").unlink(missing_ok=True)
    made = {
        "training_curves": plots.plot_training_curves(groups, plot_dir / "training_curves.png"),
        "p_sweep": plots.plot_p_sweep(groups, plot_dir / "p_sweep.png", entries),
        "ablation": plots.plot_ablation(groups, plot_dir / "ablation.png", entries),
    }
    made = {k: v for k, v in made.items() if v is not None}

    # One run per setting (its first seed) on the same sampled items.
    vis_inputs = []
    video_dirs: list[Path] = []
    for g in groups:
        run = next((r for r in g.runs if r.predictions_path is not None), None)
        if run is not None and len(vis_inputs) < vis_runs:
            label = g.label if len(g.runs) == 1 else f"{g.label} (seed {run.seed})"
            vis_inputs.append((label, run.predictions_path))
            video_dirs += run.data_dirs()
    html_page, vis_warnings = (None, [])
    if vis_inputs and vis_items > 0:
        html_page, vis_warnings = visualize_grounding(
            vis_inputs, out_dir / "grounding", vis_items, vis_seed, n_thumbs, list(dict.fromkeys(video_dirs))
        )

    kinds = {k: sum(r.kind == k for r in runs) for k in ("run", "eval")}
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# {title}",
        "",
        f"Generated {now} from {kinds['run']} training run(s) and {kinds['eval']} evaluation(s), "
        f"{len(groups)} setting(s).",
        "",
        *_metric_definition(runs),
        "",
    ]
    lines += [*_settings_section(groups, entries), ""]
    differences = differences_section(groups, references)
    lines += differences + ([""] if differences else [])
    lines += [*_runs_section([r for g in groups for r in g.runs]), ""]
    per_source = _per_source_section(runs)
    lines += per_source + ([""] if per_source else [])
    plot_titles = {
        "training_curves": "Training curves",
        "p_sweep": "p sweep (the paper's Figure 5)",
        "ablation": "Settings side by side",
    }
    if made:
        lines += ["## Plots", ""]
        for key, path in made.items():
            lines += [
                f"### {plot_titles[key]}",
                "",
                f"![{plot_titles[key]}]({path.relative_to(out_dir).as_posix()})",
                "",
            ]
    if html_page is not None:
        rel = html_page.relative_to(out_dir).as_posix()
        firsts = sorted(html_page.parent.glob("item_*.png"))[:2]
        lines += [
            "## Grounding visualisation",
            "",
            f"{min(vis_items, len(list(html_page.parent.glob('item_*.png'))))} sampled test items, ground truth "
            f"(green) against each setting's prediction (blue): [{rel}]({rel}).",
            "",
        ]
        lines += [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in firsts] + [""]
    lines += _published_section(groups, entries, header)
    notes = [*(f"skipped {s}" for s in skipped), *warnings, *vis_warnings]
    if notes:
        lines += ["", "## Skipped and warnings", "", *(f"- {n}" for n in notes)]
    markdown = out_dir / "report.md"
    markdown.write_text("\n".join(lines).rstrip() + "\n")
    summary = out_dir / "summary.json"
    summary.write_text(json.dumps(_summary_json(groups, entries), indent=2) + "\n")
    if len(groups) > 1:
        write_differences(groups, out_dir / "differences.json", references)
    for note in notes:
        log.warning("%s", note)
    return Report(markdown, summary, made, html_page, groups, skipped, warnings + vis_warnings)

"""PNG plots for reports: training curves, the p sweep (the paper's Figure 5) and ablation bars.

Every function takes run groups (seeds of one setting, see ``runs.group_runs``), writes one PNG and returns its
path, or returns None when the runs given hold nothing to plot. Colours follow the group order, so a setting
has the same colour in every figure of a report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (servers, CI)
import matplotlib.pyplot as plt
import numpy as np

from invert4tvg.eval.metrics import ACTION_KEYS, GROUNDING_KEYS, aggregate_seeds
from invert4tvg.eval.paper import PaperEntry, matching_entry
from invert4tvg.eval.runs import RunGroup

# (log key, panel title, y label). Inversion-task rewards exist only on steps that drew the task: drawn as points.
CURVE_PANELS: tuple[tuple[str, str, str], ...] = (
    ("reward/tvg", "TVG reward (IoU + format)", "reward"),
    ("reward/vc", "VC reward (verb completion)", "reward"),
    ("reward/ar", "AR reward (action recognition)", "reward"),
    ("reward/vd", "VD reward (video description)", "reward"),
    ("iou", "rollout IoU (TVG steps)", "IoU"),
    ("kl", "KL to the reference policy", "KL"),
    ("completions/mean_length", "completion length", "tokens"),
    ("eval/mIoU", "validation mIoU", "mIoU (%)"),
    # Action understanding on the validation clips during RL (the paper's Figure 1, right).
    ("eval/VC", "validation VC accuracy", "accuracy (%)"),
    ("eval/AR", "validation AR accuracy", "accuracy (%)"),
    ("eval/VD", "validation VD accuracy", "accuracy (%)"),
)
# Logs written before the TRL names were adopted (issue 28) name the same quantity differently.
LEGACY_KEYS = {"completions/mean_length": "completion_len"}
EVAL_KEYS = frozenset({"eval/mIoU", "eval/VC", "eval/AR", "eval/VD"})
SPARSE_KEYS = frozenset({"reward/vc", "reward/ar", "reward/vd"}) | EVAL_KEYS
UNSMOOTHED_KEYS = EVAL_KEYS  # validation results are measurements, not noisy per-step estimates
MAX_BINS = 40
REWARD_KEY = re.compile(r"rewards/([^/]+)/mean")


def group_colors(groups: Sequence[RunGroup]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {g.label: cmap(i % 10) for i, g in enumerate(groups)}


def _series(group: RunGroup, key: str) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for run in group.runs:
        name = key if any(key in row for row in run.curves) else LEGACY_KEYS.get(key, key)
        pts = [(row["step"], row[name]) for row in run.curves if name in row]
        if pts:
            arr = np.asarray(pts, dtype=float)
            out.append((arr[:, 0], arr[:, 1]))
    return out


def _trend(steps: np.ndarray, values: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
    """One trend line per setting: mean over seeds (binned by step when the log is long), then a centred moving
    average, wider for sparse series whose points are few and noisy (an inversion task drawn on 1 step in 15)."""
    unique = np.unique(steps)
    if len(unique) <= MAX_BINS:
        xs, ys = unique, np.array([values[steps == s].mean() for s in unique])
    else:
        edges = np.linspace(unique[0], unique[-1], MAX_BINS + 1)
        idx = np.clip(np.digitize(steps, edges) - 1, 0, MAX_BINS - 1)
        keep = [b for b in range(MAX_BINS) if (idx == b).any()]
        xs = np.array([steps[idx == b].mean() for b in keep])
        ys = np.array([values[idx == b].mean() for b in keep])
    if key in UNSMOOTHED_KEYS:
        return xs, ys
    window = min(max(3, len(xs) // 6) if key in SPARSE_KEYS else max(1, len(xs) // 10), len(xs))
    if window > 1:
        kernel = np.ones(window)
        # Dividing by the convolved ones keeps the ends unbiased (fewer neighbours, not zeros).
        ys = np.convolve(ys, kernel, mode="same") / np.convolve(np.ones_like(ys), kernel, mode="same")
    return xs, ys


def reward_panels(groups: Sequence[RunGroup]) -> list[tuple[str, str, str]]:
    """A panel per ``rewards/<name>/mean`` any run logged (TRL's key: built-in, plugin and path rewards alike)."""
    keys = sorted(
        {k for g in groups for run in g.runs for row in run.curves for k in row if REWARD_KEY.fullmatch(k)}
    )
    return [
        (k, f"reward {REWARD_KEY.fullmatch(k).group(1)} (mean over the completions it scored)", "reward")
        for k in keys
    ]


def _sparse(groups: Sequence[RunGroup], key: str) -> bool:
    """Drawn as points: a quantity logged on only some steps (a task's reward on the steps that drew it)."""
    return key in SPARSE_KEYS or any(
        0 < sum(key in row for row in run.curves) < 0.9 * len(run.curves) for g in groups for run in g.runs
    )


def _readable_limits(ax: plt.Axes, xs: np.ndarray, ys: np.ndarray) -> None:
    """Matplotlib frames a single point or a flat line in +-4% of its value (a lone 1.0 on 0.96 to 1.04): show
    it against zero instead, and one step either side of a single step."""
    ys = ys[~np.isnan(ys)]
    if len(ys) and np.ptp(ys) < 1e-9:
        low, high = min(0.0, float(ys[0])), max(0.0, float(ys[0]))
        high = high if high > low else low + 1.0
        pad = 0.05 * (high - low)
        ax.set_ylim(low - pad, high + pad)
    if len(xs) and np.ptp(xs) == 0:
        ax.set_xlim(xs[0] - 1, xs[0] + 1)


def plot_training_curves(groups: Sequence[RunGroup], out: Path) -> Path | None:
    """One panel per logged quantity; faint: each seed's raw log, bold: the setting's trend over seeds."""
    panels = [p for p in (*CURVE_PANELS, *reward_panels(groups)) if any(_series(g, p[0]) for g in groups)]
    if not panels:
        return None
    colors = group_colors(groups)
    ncols = min(4, len(panels))
    nrows = (len(panels) + ncols - 1) // ncols
    height = 3.0 * nrows + 0.5 + 0.25 * -(-len(groups) // 5)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, height), squeeze=False, layout="constrained")
    for ax, (key, title, ylabel) in zip(axes.flat, panels):
        sparse = _sparse(groups, key)
        drawn = [s for g in groups for s in _series(g, key)]
        _readable_limits(ax, np.concatenate([s for s, _ in drawn]), np.concatenate([v for _, v in drawn]))
        for g in groups:
            series = _series(g, key)
            if not series:
                continue
            color = colors[g.label]
            for steps, values in series:
                if sparse:
                    ax.scatter(steps, values, s=10, color=color, alpha=0.45, linewidths=0)
                else:
                    ax.plot(steps, values, color=color, alpha=0.2, linewidth=0.8)
            all_steps = np.concatenate([s for s, _ in series])
            xs, ys = _trend(all_steps, np.concatenate([v for _, v in series]), key)
            ax.plot(
                xs, ys, color=color, linewidth=2.0, label=g.label, marker="o" if len(xs) < 12 else None, ms=3
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat:  # a setting may be missing from the first panel (e.g. no TVG reward logged)
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), frameon=False)
    fig.suptitle("Training curves (faint: each seed; bold: mean over seeds, smoothed)", fontsize=11)
    return _save(fig, out)


def percent_bars(mean: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Error bars of percentages as (below, above), cut at 0 and 100: an accuracy of 5 +- 8 is drawn from 0 to 13,
    never below 0%."""
    below = np.minimum(spread, np.clip(mean, 0, 100))
    above = np.minimum(spread, 100 - np.clip(mean, 0, 100))
    return np.nan_to_num(np.vstack([below, above]))


def sweep_groups(groups: Sequence[RunGroup]) -> list[RunGroup]:
    """Groups that form a p sweep: all three inversion tasks (or none, p = 1), binary reward, one dataset and
    model, at least two distinct p. The largest such cohort wins when several exist."""
    cohorts: dict[tuple, list[RunGroup]] = {}
    for g in groups:
        a = g.attrs
        if a["p"] is None or a["invert_tasks"] not in ((), ("ar", "vc", "vd")):
            continue
        if a["invert_tasks"] and (a["reward"] or "binary") != "binary":
            continue
        cohorts.setdefault((a["model"], a["dataset"], a["split"], a["strict"]), []).append(g)
    best = max(cohorts.values(), key=lambda c: len({g.attrs["p"] for g in c}), default=[])
    return sorted(best, key=lambda g: -g.attrs["p"]) if len({g.attrs["p"] for g in best}) >= 2 else []


def _present_keys(groups: Sequence[RunGroup], keys: Sequence[str]) -> list[str]:
    return [k for k in keys if any(v is not None for g in groups for v in g.metric_values(k))]


def plot_p_sweep(
    groups: Sequence[RunGroup], out: Path, entries: tuple[PaperEntry, ...] | None = None
) -> Path | None:
    """R1@m / mIoU (and VC/AR/VD accuracy) against the Invert-TVG probability 1 - p, as the paper's Figure 5."""
    sweep = sweep_groups(groups)
    if not sweep:
        return None
    x = np.array([100.0 * (1.0 - g.attrs["p"]) for g in sweep])
    action = _present_keys(sweep, ACTION_KEYS)
    panels = [(GROUNDING_KEYS, "Grounding")] + (
        [(action, "Action understanding (inversion tasks)")] if action else []
    )
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.8 * len(panels), 4.4), squeeze=False, layout="constrained"
    )
    cmap = plt.get_cmap("tab10")
    published = [matching_entry(g, entries) for g in sweep]
    # Nudge the series apart so their error bars do not hide each other.
    span = max(x.max() - x.min(), 1.0)
    for ax, (keys, title) in zip(axes[0], panels):
        for i, key in enumerate(keys):
            stats = [aggregate_seeds(g.metric_values(key)) for g in sweep]
            mean = np.array([np.nan if s.mean is None else s.mean for s in stats])
            std = np.array([0.0 if s.std is None else s.std for s in stats])
            nudge = (i - (len(keys) - 1) / 2) * 0.008 * span
            ax.errorbar(
                x + nudge, mean, yerr=percent_bars(mean, std), marker="o", capsize=3, color=cmap(i), label=key
            )
            pub = [
                (xi, e.metrics[key]) for xi, e in zip(x, published) if e and e.metrics.get(key) is not None
            ]
            if pub:
                ax.scatter(
                    *zip(*pub),
                    marker="D",
                    facecolors="none",
                    edgecolors=cmap(i),
                    s=50,
                    label=f"{key}, published (same setting)",
                )
        ax.set_xticks(x, [f"{xi:g}%\n(p={g.attrs['p']:g})" for xi, g in zip(x, sweep)])
        ax.set_xlabel("Invert-TVG task probability 1 − p")
        ax.set_ylabel("percent")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    n = ", ".join(f"p={g.attrs['p']:g}: n={len(g.runs)}" for g in sweep)
    fig.suptitle(f"p sweep: mean ± std over seeds ({n})", fontsize=10)
    return _save(fig, out)


def plot_ablation(
    groups: Sequence[RunGroup], out: Path, entries: tuple[PaperEntry, ...] | None = None
) -> Path | None:
    """Grouped bars (mean ± std over seeds) of grounding and action-understanding metrics, one bar per setting.
    Settings without results are left out (their colour stays reserved, as in the other plots)."""
    colors = group_colors(groups)
    groups = [g for g in groups if any(r.metrics for r in g.runs)]
    if len(groups) < 2:
        return None
    action = _present_keys(groups, ACTION_KEYS)
    panels = [(GROUNDING_KEYS, "Grounding")] + ([(action, "Action understanding")] if action else [])
    widths = [max(2, len(k)) for k, _ in panels]
    height = 4.6 + 0.25 * -(-len(groups) // 4)
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(max(7.0, 1.0 + 0.4 * len(groups) * sum(widths)), height),
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
        layout="constrained",
    )
    bar_w = 0.8 / len(groups)
    published_drawn = False
    for ax, (keys, title) in zip(axes[0], panels):
        centers = np.arange(len(keys))
        for j, g in enumerate(groups):
            stats = [aggregate_seeds(g.metric_values(k)) for k in keys]
            mean = [np.nan if s.mean is None else s.mean for s in stats]
            std = [0.0 if s.std is None else s.std for s in stats]
            xs = centers - 0.4 + bar_w * (j + 0.5)
            bars = percent_bars(np.array(mean), np.array(std))
            ax.bar(xs, mean, bar_w * 0.92, yerr=bars, capsize=2, color=colors[g.label], label=g.label)
            for xi, m, sd in zip(xs, mean, bars[1]):
                if not np.isnan(m):
                    ax.text(xi, m + sd + 1, f"{m:.0f}", ha="center", va="bottom", fontsize=6)
            entry = matching_entry(g, entries)
            pub = (
                []
                if entry is None
                else [(xi, entry.metrics[k]) for xi, k in zip(xs, keys) if entry.metrics.get(k) is not None]
            )
            if pub:
                ax.scatter(
                    *zip(*pub),
                    marker="_",
                    s=200,
                    color="black",
                    zorder=3,
                    label=None if published_drawn else "published (paper, same setting)",
                )
                published_drawn = True
        ax.set_xticks(centers, keys)
        ax.set_xlim(-0.6, len(keys) - 0.4)
        ax.set_ylabel("percent")
        ax.set_ylim(0, 110)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(
        handles, labels, loc="outside lower center", ncol=min(len(labels), 4), frameon=False, fontsize=9
    )
    fig.suptitle("Settings compared: mean ± std over seeds (number above a bar: mean)", fontsize=10)
    return _save(fig, out)


def _save(fig: plt.Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

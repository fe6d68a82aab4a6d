"""Reports from run / eval directories: aggregation over seeds, paper columns, plots, grounding visualisation."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from pathlib import Path

import pytest

from invert4tvg.eval.metrics import metrics_from_predictions
from invert4tvg.eval.paper import load_paper_results, matching_entry
from invert4tvg.eval.report import build_report
from invert4tvg.eval.runs import ReportInputError, group_runs, load_dir, model_size

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS = {"time_r1": [], "invert4tvg": ["vc", "ar", "vd"], "only_vc": ["vc"]}


def write_video(path: Path, seconds: float = 6.0, fps: int = 8, size: tuple[int, int] = (96, 64)) -> Path:
    """A small H.264 file whose colour changes every second, so thumbnails are visibly different."""
    import av
    import numpy as np

    colors = [(220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 40), (150, 60, 200), (40, 200, 200)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.empty((size[1], size[0], 3), np.uint8)
            img[:] = colors[(i // fps) % len(colors)]
            img[: size[1] // 4, : (i % fps + 1) * size[0] // fps] = 255  # a bar that grows within each second
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_eval_dir(
    path: Path, meta: dict, ious: list[float | None], video: str = "", vc: list | None = None
) -> dict:
    """predictions.jsonl + metrics.json as the evaluator writes them; returns the metrics."""
    path.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, iou in enumerate(ious):
        gt = [1.0, 4.0]
        if iou is None:
            pred, output = None, "<think>hmm</think><answer>somewhere</answer>"
        else:
            # A span [1, 1 + 3 * iou] inside gt has exactly this IoU (intersection = its length, union = 3 s).
            pred = [1.0, 1.0 + 3.0 * iou]
            output = f"<think>...</think><answer>{pred[0]:.2f} to {pred[1]:.2f}</answer>"
        tasks = (
            {}
            if vc is None
            else {"vc": {"prompt_query": "a person [MASK] a door", "output": "opens", "reward": vc[i]}}
        )
        rows.append(
            {
                "id": f"item{i}",
                "video": video,
                "query": f"a person does thing {i}",
                "duration": 6.0,
                "source": "synthetic",
                "gt": gt,
                "output": output,
                "pred": pred,
                "iou": 0.0 if iou is None else iou,
                "tasks": tasks,
            }
        )
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = metrics_from_predictions(rows)
    metrics["metadata"] = {
        "dataset": meta.get("dataset", "synthetic"),
        "split": "test",
        "model": meta["model"],
        "versions": {},
        "nlp_backend": "test",
    }
    (path / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def write_run(
    path: Path,
    setting: str,
    seed: int,
    ious: list[float | None],
    p: float | None = None,
    model: str = "tiny",
    dataset: str = "synthetic",
    vc: list | None = None,
    steps: int = 30,
    video: str = "",
) -> dict:
    path.mkdir(parents=True, exist_ok=True)
    tasks = TASKS[setting]
    if p is None:
        p = 1.0 if not tasks else 0.8
    meta = {
        "run_name": path.name,
        "setting": setting,
        "seed": seed,
        "p": p,
        "invert_tasks": tasks,
        "reward": "binary",
        "model": model,
        "dataset": dataset,
        "versions": {},
        "nlp_backend": "test",
        "config": {},
    }
    (path / "metadata.json").write_text(json.dumps(meta))
    rng = random.Random(seed)
    lines = []
    for step in range(steps):
        task = "tvg" if not tasks or rng.random() < p else rng.choice(tasks)
        # Curves that differ by setting and seed, so plots of the fixture can be looked at.
        level = len(tasks) / 3 + seed / 10
        row = {
            "step": step,
            "task": task,
            "loss": 0.1,
            "kl": 0.001 * step * (1 + level),
            "completions/mean_length": 40 + step * (1 + level) + rng.gauss(0, 3),
            "reward": rng.random(),
        }
        if task == "tvg":
            iou = min(1.0, (0.3 + 0.5 * level) * step / steps + rng.gauss(0, 0.05))
            row.update({"reward/tvg": 1 + iou, "iou": iou})
        else:
            row[f"reward/{task}"] = min(1.0, 0.4 + level * step / steps / 2 + rng.gauss(0, 0.1))
        if step % 10 == 9:
            row.update({"eval/mIoU": (20 + 20 * level) * step / steps, "eval/R1@0.5": 2.0 * step})
        lines.append(json.dumps(row))
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return write_eval_dir(path / "eval", meta, ious, video=video, vc=vc)


def png_ok(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 2000


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    video = write_video(root / "clip.mp4")
    # time_r1 seeds: R1@0.5 = 50, 25, 75 -> mean 50, std 25. invert4tvg: one parse failure per seed.
    write_run(root / "tr1_s0", "time_r1", 0, [0.8, 0.5, 0.2, 0.1], vc=[0, 1, 0, 0], video=str(video))
    write_run(root / "tr1_s1", "time_r1", 1, [0.8, 0.2, 0.2, 0.1], vc=[0, 0, 0, 0], video=str(video))
    write_run(root / "tr1_s2", "time_r1", 2, [0.8, 0.5, 0.6, 0.1], vc=[1, 1, 0, 0], video=str(video))
    for seed in range(3):
        write_run(
            root / f"inv_s{seed}",
            "invert4tvg",
            seed,
            [0.9, 0.7, None, 0.3],
            vc=[1, 1, 1, 0],
            video=str(video),
        )
    write_run(root / "inv_p06_s0", "invert4tvg", 0, [0.6, 0.4, 0.3, 0.0], p=0.6)
    write_run(root / "vc_s0", "only_vc", 0, [0.4, 0.4, 0.4, 0.4])
    # One line of a log truncated mid-write, and a directory that is not a run at all.
    with (root / "vc_s0" / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 99, "kl": 0.\n')
    (root / "empty").mkdir()
    out = root / "report"
    dirs = sorted(p for p in root.iterdir() if p.is_dir())
    report = build_report(dirs, out, vis_items=4, n_thumbs=6)
    return out, report


def test_report_aggregates_seeds(report_dir):
    out, _ = report_dir
    md = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    by_label = {g["label"]: g for g in summary["groups"]}
    tr1 = by_label["time_r1"]["metrics"]
    assert tr1["R1@0.5"]["n"] == 3
    assert tr1["R1@0.5"]["mean"] == pytest.approx(50.0)
    assert tr1["R1@0.5"]["std"] == pytest.approx(25.0)
    assert tr1["VC"]["mean"] == pytest.approx(100 * 3 / 12)  # 1 + 0 + 2 correct of 12
    # The table row of time_r1 shows the same numbers.
    row = next(line for line in md.splitlines() if line.startswith("| time_r1 |"))
    assert "50.0 ± 25.0" in row
    inv = by_label["invert4tvg [p=0.8]"]["metrics"]
    assert inv["mIoU"]["mean"] == pytest.approx(100 * (0.9 + 0.7 + 0.0 + 0.3) / 4)
    assert inv["mIoU"]["std"] is None or inv["mIoU"]["std"] == pytest.approx(0.0)
    assert "invert4tvg [p=0.6]" in by_label
    # Each run appears with its parse-failure count.
    inv_row = next(line for line in md.splitlines() if line.startswith("| inv_s1 |"))
    assert inv_row.rstrip(" |").split("|")[-2].strip() == "1"


def test_report_skips_and_warns(report_dir):
    out, report = report_dir
    md = (out / "report.md").read_text()
    assert any("empty" in s for s in report.skipped)
    assert re.search(r"vc_s0/metrics\.jsonl:31: not valid JSON", md)


def test_synthetic_runs_never_get_paper_numbers_beside_them(report_dir):
    out, _ = report_dir
    md = (out / "report.md").read_text()
    settings = md.split("## Settings compared")[1].split("## Runs")[0]
    assert "published" not in settings.lower()
    published = md.split("## Published numbers (different setting: not comparable)")[1]
    assert "80.8" in published and "78.7" in published  # Invert4TVG 3B and Time-R1* 3B, Table 1
    assert "42.0" in published  # Only-VC, Table 2


def test_plots_are_valid_pngs(report_dir):
    out, report = report_dir
    assert set(report.plots) == {"training_curves", "p_sweep", "ablation"}
    for path in report.plots.values():
        assert png_ok(path)
        assert f"]({path.relative_to(out).as_posix()})" in (out / "report.md").read_text()


def test_grounding_html_references_images(report_dir):
    _, report = report_dir
    page = report.html.read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    assert len(images) == 4  # every item of the fixture, so the parse failure is among them
    for rel in images:
        assert png_ok(report.html.parent / rel)
    assert '<td class="fail">parse failure' in page
    assert "time_r1 (seed 0)" in page and "invert4tvg [p=0.8] (seed 0)" in page
    assert not any("thumbnails" in w or "video" in w for w in report.warnings)


def test_visualisation_without_video_file(tmp_path):
    from invert4tvg.eval.visualize import visualize_grounding

    write_eval_dir(tmp_path / "ev", {"model": "tiny"}, [0.5, None], video="no/such/video.mp4")
    page, warnings = visualize_grounding(
        [("run", tmp_path / "ev" / "predictions.jsonl")], tmp_path / "vis", k=2
    )
    assert page is not None and len(list((tmp_path / "vis").glob("item_*.png"))) == 2
    assert any("video file not found" in w and "no/such/video.mp4" in w for w in warnings)
    assert "video file not found" in page.read_text()


def test_paper_entry_matches_only_the_same_setting(tmp_path):
    _, entries = load_paper_results()
    write_run(
        tmp_path / "a", "invert4tvg", 0, [0.5], model="Qwen/Qwen2.5-VL-3B-Instruct", dataset="charades_sta"
    )
    write_run(
        tmp_path / "b", "invert4tvg", 0, [0.5], model="Qwen/Qwen2.5-VL-7B-Instruct", dataset="Charades-STA"
    )
    write_run(
        tmp_path / "c", "invert4tvg", 0, [0.5], model="Qwen/Qwen2.5-VL-3B-Instruct", dataset="synthetic"
    )
    write_run(
        tmp_path / "d",
        "invert4tvg",
        0,
        [0.5],
        p=0.6,
        model="Qwen/Qwen2.5-VL-3B-Instruct",
        dataset="charades_sta",
    )
    write_run(
        tmp_path / "e", "time_r1", 0, [0.5], model="Qwen/Qwen2.5-VL-3B-Instruct", dataset="charades_sta"
    )
    groups = {g.runs[0].name: g for g in group_runs([load_dir(tmp_path / n) for n in "abcde"])}
    assert matching_entry(groups["a"], entries).metrics["R1@0.7"] == 44.0
    assert matching_entry(groups["b"], entries).metrics["R1@0.7"] == 51.4
    assert matching_entry(groups["c"], entries) is None
    assert matching_entry(groups["d"], entries) is None
    assert matching_entry(groups["e"], entries).metrics["R1@0.7"] == 36.9
    report = build_report([tmp_path / n for n in "ae"], tmp_path / "out", vis_items=0)
    md = report.markdown.read_text()
    row = next(line for line in md.splitlines() if line.startswith("| invert4tvg |"))
    assert "80.8 / 69.0 / 44.0 (Table 1" in row


def test_time_r1_run_listing_inversion_tasks_still_matches_the_paper(tmp_path):
    # The shipped time_r1 configs keep `invert_tasks: [vc, ar, vd]` (unused at p = 1); the run trained none.
    _, entries = load_paper_results()
    write_run(
        tmp_path / "t", "time_r1", 0, [0.5], model="Qwen/Qwen2.5-VL-3B-Instruct", dataset="charades_sta"
    )
    meta_path = tmp_path / "t" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "invert_tasks": ["vc", "ar", "vd"], "p": 1.0}))
    (group,) = group_runs([load_dir(tmp_path / "t")])
    assert group.attrs["invert_tasks"] == ()
    assert matching_entry(group, entries).metrics["R1@0.7"] == 36.9


def test_model_size():
    assert model_size("Qwen/Qwen2.5-VL-3B-Instruct") == "3B"
    assert model_size("/ckpt/qwen2.5-vl-7b") == "7B"
    assert model_size("runs/tiny-model") is None


def test_bad_metrics_json_names_the_file(tmp_path):
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "metrics.json").write_text('{"R1@0.3": 120}')
    with pytest.raises(ReportInputError, match=r"ev/metrics\.json: R1@0\.3 = 120"):
        load_dir(tmp_path / "ev")
    (tmp_path / "ev" / "metrics.json").write_text('{"R1@0.3": 1,\n oops}')
    with pytest.raises(ReportInputError, match=r"ev/metrics\.json:2: not valid JSON"):
        load_dir(tmp_path / "ev")
    with pytest.raises(ValueError, match="no usable run"):
        build_report([tmp_path / "ev"], tmp_path / "out")


def test_paper_results_file_is_consistent():
    header, entries = load_paper_results()
    assert header["not_readable"], "the file must say what could not be read"
    ids = [e.id for e in entries]
    assert len(ids) == len(set(ids))
    for e in entries:
        assert e.source
        for v in e.metrics.values():
            assert v is None or (0 <= v <= 100 and not math.isnan(v))


def test_cli_report(report_dir, tmp_path, capsys):
    from invert4tvg.cli import main

    runs = report_dir[0].parent
    assert (
        main(
            [
                "report",
                str(runs / "tr1_s0"),
                str(runs / "inv_s0" / "eval"),
                "--out",
                str(tmp_path / "r"),
                "--vis-items",
                "1",
                "--thumbnails",
                "4",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "report.md" in printed and "index.html" in printed
    md = (tmp_path / "r" / "report.md").read_text()
    assert "1 training run(s) and 1 evaluation(s)" in md
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")]) == 2
    assert "not a directory" in capsys.readouterr().out


def test_fallbacks_and_duplicates(tmp_path):
    from invert4tvg.eval.runs import load_dirs

    # A run without eval/: its metrics are the last validation row's.
    write_run(tmp_path / "run", "time_r1", 0, [0.5])
    shutil.rmtree(tmp_path / "run" / "eval")
    run = load_dir(tmp_path / "run")
    assert run.metrics["mIoU"] == pytest.approx(20.0 * 29 / 30)  # level 0: (20 + 0) * 29 / 30
    assert run.metrics_source.startswith("metrics.jsonl (last validation, step 29")
    # An eval dir without metrics.json: recomputed from predictions.jsonl.
    write_eval_dir(tmp_path / "ev", {"model": "tiny"}, [0.5, None, 0.9])
    (tmp_path / "ev" / "metrics.json").unlink()
    ev = load_dir(tmp_path / "ev")
    assert ev.metrics["R1@0.5"] == pytest.approx(200 / 3)
    assert ev.metrics["counts"]["parse_failures"] == 1
    assert ev.metrics_source.startswith("predictions.jsonl (recomputed")
    # RUN and RUN/eval given together count once.
    write_run(tmp_path / "r2", "time_r1", 1, [0.5])
    runs, skipped = load_dirs([tmp_path / "r2", tmp_path / "r2" / "eval"])
    assert len(runs) == 1 and "already read as the evaluation of" in skipped[0]


def test_two_runs_of_one_seed_are_refused(tmp_path, capsys):
    from invert4tvg.cli import main

    write_run(tmp_path / "a", "time_r1", 0, [0.5, 0.2])
    write_run(tmp_path / "b", "time_r1", 0, [0.5, 0.2])  # the same setting and seed again
    with pytest.raises(ReportInputError, match=r"time_r1: .*a and .*b both have seed 0; averaging them"):
        build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "report")
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "r")]) == 2
    assert "both have seed 0" in capsys.readouterr().out


def test_curves_plot_every_reward_and_readable_single_points(tmp_path, monkeypatch):
    from invert4tvg.eval import plots

    write_run(tmp_path / "run", "invert4tvg", 0, [0.5], steps=6)
    log = tmp_path / "run" / "metrics.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    for row in rows:  # a reward given by path, logged on every step; VC drawn once, scoring 1.0
        row["rewards/span_inside_video/mean"] = 0.5
        row.pop("reward/vc", None)
    rows[2]["reward/vc"] = 1.0
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, out: figures.append(fig) or out)
    plots.plot_training_curves(group_runs([load_dir(tmp_path / "run")]), tmp_path / "curves.png")
    axes = {ax.get_title(): ax for ax in figures[0].axes if ax.get_title()}
    assert "reward span_inside_video (mean over the completions it scored)" in axes
    flat = axes["reward span_inside_video (mean over the completions it scored)"]
    assert flat.get_ylim()[0] <= 0.0 and flat.get_ylim()[1] >= 0.5  # a flat 0.5 is shown against 0
    single = axes["VC reward (verb completion)"]
    low, high = single.get_ylim()
    assert low <= 0.0 and high >= 1.0 and high - low > 0.5  # not 0.96 to 1.04
    assert single.get_xlim() == (1.0, 3.0)  # one step either side of step 2


def test_error_bars_of_percentages_stay_in_0_to_100():
    import numpy as np

    from invert4tvg.eval.plots import percent_bars

    bars = percent_bars(np.array([5.0, 50.0, 98.0]), np.array([8.0, 8.0, 5.0]))
    assert bars.tolist() == [[5.0, 8.0, 5.0], [8.0, 8.0, 2.0]]  # (below, above): 5 - 5 = 0, 98 + 2 = 100

"""Bad input, by class (issue 23): paths that escape, silently wrong runs, and crashes that named nothing. Each test
feeds the class's example and at least one more member of the class through the real loaders, recipe and CLI."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from data_fixtures import write_coded_video, write_json
from run_fixtures import FAST, copy_run, grpo_args, small_train
from safetensors.torch import load_file

import rewards
from invert4tvg.builders import load_split
from invert4tvg.cli import main as cli
from invert4tvg.config import DataArguments
from invert4tvg.config_checks import ConfigError
from invert4tvg.data.formats import DataError, load_records
from invert4tvg.grpo.reward_set import RewardSet
from invert4tvg.training.batch_videos import BadVideosError
from invert4tvg.training.checkpoint import MANIFEST, CheckpointError
from invert4tvg.training.output_dir import OutputDirError
from rewards.errors import RewardOutputError


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- security: nothing outside --video-dir is read, nothing outside output_dir is written -------------------------
def test_video_paths_that_leave_the_video_dir_are_refused_in_every_loader(tiny_bench, tmp_path, capsys):
    videos, outside = tmp_path / "videos", tmp_path / "outside"
    videos.mkdir(), outside.mkdir()
    write_coded_video(videos / "inside.mp4", 16, 8)
    write_coded_video(outside / "secret.mp4", 16, 8)
    item = {"duration": 2.0, "timestamp": [0.5, 1.5], "sentence": "a person opens a door."}
    for bad in ("../outside/secret.mp4", str(outside / "secret.mp4"), "sub/../../outside/secret.mp4"):
        ann = write_json(tmp_path / "time_r1.json", [{**item, "video": "inside.mp4"}, {**item, "video": bad}])
        with pytest.raises(
            DataError, match=r"time_r1.json, item 1: video_outside_dir .*leaves the video dir"
        ):
            load_records("time-r1", ann, video_dir=videos)
        # training and eval load through load_split; data check reports the sample and exits 1
        data = DataArguments(dataset_format="time-r1", train_annotations=str(ann), video_dir=str(videos))
        with pytest.raises(DataError, match="video_outside_dir"):
            load_split(data, "train")
        code = cli(
            ["data", "check", "--format", "time-r1", "--annotations", str(ann), "--video-dir", str(videos)]
        )
        report = json.loads(capsys.readouterr().out)
        assert code == 1 and report["skipped_by_reason"] == {"video_outside_dir": 1}
        assert report["videos_decoded"] == 1  # the outside file was never opened
    # inside paths, plain names and absolute paths inside the directory still resolve
    for good in ("inside.mp4", "./inside.mp4", str(videos / "inside.mp4"), "inside"):
        ann = write_json(tmp_path / "ok.json", [{**item, "video": good}])
        (record,) = load_records("time-r1", ann, video_dir=videos).records
        assert Path(record.video).resolve() == (videos / "inside.mp4").resolve()
    # formats that name videos by id never build a path from it
    (tmp_path / "sta.txt").write_text("../outside/secret 0.5 1.5##a person opens a door.\n")
    result = load_records(
        "charades-sta", tmp_path / "sta.txt", {"../outside/secret": 2.0}, video_dir=videos, on_error="skip"
    )
    assert result.report["skipped_by_reason"] == {"missing_video": 1}


def test_run_name_never_becomes_a_path_and_trackers_stay_inside_output_dir(
    grpo, tiny_bench, tiny_model_dir, train_file, tmp_path
):
    parent = tmp_path / "parent"
    out = parent / "run"
    args = grpo_args(
        tiny_bench, train_file, tiny_model_dir, out, "--max_steps", "1", "--save_steps", "0", *FAST
    )
    grpo.main([*args, "--report_to", "tensorboard", "--run_name", "..", "--frame_cache_dir", ""])
    assert files_under(parent) == {"run"} | {f"run/{p}" for p in files_under(out)}
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((out / "metadata.json").read_text())["run_name"] == ".."


# -- silently wrong ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_reward_is_refused_naming_the_reward_and_the_sample(bad):
    def spiky(completions, **columns):
        return [1.0, bad][: len(completions)]

    rewards.register("spiky_reward", spiky, override=True)
    columns = {"record_id": ["q1", "q2"], "task": ["tvg", "tvg"]}
    with pytest.raises(RewardOutputError, match=r"'spiky_reward': sample 1.*returned (inf|-inf|nan)"):
        RewardSet(["spiky_reward"])(["a", "b"], **columns)


def test_a_built_in_style_reward_returning_inf_is_refused_too(
    grpo, tiny_bench, tiny_model_dir, train_file, tmp_path
):
    """A Reward subclass is not wrapped like a plain function: the reward set checks every score it sums."""

    class Infinite(rewards.Reward):
        name = "infinite"

        def score_one(self, i, text, cols, prepared):
            return float("inf")

    rewards.register("infinite", Infinite, override=True)
    out = tmp_path / "run"
    args = grpo_args(tiny_bench, train_file, tiny_model_dir, out, "--max_steps", "2", *FAST)
    with pytest.raises(
        RewardOutputError, match=r"'infinite': sample 0 \(record '.*', task '.*'\): returned inf"
    ):
        grpo.main([*args, "--reward_funcs", "invert4tvg", "infinite"])
    metrics = out / "metrics.jsonl"
    assert not metrics.exists() or "Infinity" not in metrics.read_text()


def _data_check(capsys, *argv: str) -> tuple[int, dict, str]:
    code = cli(["data", "check", *argv])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


@pytest.mark.parametrize("fmt, text", [("charades-sta", ""), ("qvhighlights", "\n\n"), ("tvg-json", "{}")])
def test_data_check_refuses_a_file_without_samples(fmt, text, tmp_path, capsys):
    ann, durations = tmp_path / "ann.txt", tmp_path / "durations.txt"
    ann.write_text(text)
    durations.write_text("")
    code, report, err = _data_check(
        capsys, "--format", fmt, "--annotations", str(ann), "--durations", str(durations)
    )
    assert code == 1 and report["records"] == 0
    assert f"{ann}: no usable sample" in err


def test_data_check_compares_durations_and_applies_training_sampling(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_coded_video(videos / "ten.mp4", 80, 8)  # 10 s
    write_coded_video(videos / "one.mp4", 1, 8)  # one frame: training cannot sample 2 frames from it
    write_coded_video(videos / "ok.mp4", 48, 8)  # 6 s
    entries = {
        "ten": {"duration": 1e9, "timestamps": [[5e8, 5e8 + 2]], "sentences": ["a person opens a door."]},
        "one": {"duration": 0.125, "timestamps": [[0.0, 0.1]], "sentences": ["a person sits."]},
        "ok": {
            "duration": 6.4,
            "timestamps": [[1.0, 1.1], [1.0, 4.0]],
            "sentences": ["a person eats.", "b."],
        },
    }
    ann = write_json(tmp_path / "ann.json", entries)
    code, report, err = _data_check(
        capsys, "--format", "tvg-json", "--annotations", str(ann), "--video-dir", str(videos)
    )
    assert code == 1
    (mismatch,) = report["duration_mismatches"]
    assert Path(mismatch["video"]).name == "ten.mp4" and mismatch["decoded"] == 10.0
    assert "annotated 1e+09 s, the video has 10 s" in err
    (unreadable,) = report["unreadable_videos"]
    assert Path(unreadable["video"]).name == "one.mp4" and "training cannot sample it" in unreadable["reason"]
    # a ground-truth clip (the VC/AR/VD input) too short to sample: 0.1 s at 8 fps covers one source frame
    assert [c["id"] for c in report["unusable_clips"]] == ["ok_0"]
    # a training config's sampling applies (its other fields are passed over); a bad value in it is one line
    config = tmp_path / "train.yaml"
    config.write_text("video_fps: 1\nnum_generations: 4\n")
    code, report, _ = _data_check(
        capsys,
        "--format",
        "tvg-json",
        "--annotations",
        str(ann),
        "--video-dir",
        str(videos),
        "--config",
        str(config),
    )
    assert code == 1 and [c["id"] for c in report["unusable_clips"]] == ["ok_0"]
    config.write_text("video_fps: fast\n")
    code = cli(["data", "check", "--format", "tvg-json", "--annotations", str(ann), "--config", str(config)])
    assert code == 2 and "video_fps: expected a number" in capsys.readouterr().err


def _zero_byte_bench(tiny_bench: Path, tmp_path: Path, n: int = 4) -> tuple[Path, Path]:
    train = small_train(tiny_bench, tmp_path / "train.json", n)
    videos = tmp_path / "videos"
    videos.mkdir()
    for vid in json.loads(train.read_text()):
        (videos / f"{vid}.mp4").write_bytes(b"")
    return train, videos


def test_a_run_whose_videos_are_all_unreadable_stops_at_once(grpo, tiny_bench, tiny_model_dir, tmp_path):
    train, videos = _zero_byte_bench(tiny_bench, tmp_path)
    out = tmp_path / "run"
    args = grpo_args(tiny_bench, train, tiny_model_dir, out, "--max_steps", "5", *FAST)
    with pytest.raises(BadVideosError, match=r"\d+ of the training set's \d+ videos failed to decode") as err:
        grpo.main([*args, "--video_dir", str(videos), "--frame_cache_dir", ""])
    assert ".mp4" in str(err.value)  # the list of files
    assert not (out / "final").exists()
    assert not list(out.glob("checkpoints/step_*"))
    # the fraction over the decodes still applies once 20 were tried (a large set with a few bad files runs on)
    from invert4tvg.training.batch_videos import VideoFailureBudget

    budget = VideoFailureBudget(0.05, total=1000)
    budget.record(18, {"a.mp4": "x"})  # 1 of 1000 videos, 1 of 19 decodes: neither rule yet
    with pytest.raises(BadVideosError, match="of 20 videos decoded so far"):
        budget.record(0, {"b.mp4": "y"})


def _rewrite_manifest(ckpt: Path) -> None:
    files = [p for p in sorted(ckpt.rglob("*")) if p.is_file() and p.name != MANIFEST]
    sizes = {str(p.relative_to(ckpt)): p.stat().st_size for p in files}
    (ckpt / MANIFEST).write_text(json.dumps({"files": sizes}))


def test_a_resume_refuses_a_trainer_state_that_disagrees_with_its_checkpoint(
    grpo, finished, tiny_bench, tiny_model_dir, train_file, tmp_path, caplog
):
    run = copy_run(finished, tmp_path / "run")
    args = grpo_args(tiny_bench, train_file, tiny_model_dir, run, "--max_steps", "2", *FAST)
    step2 = run / "checkpoints/step_2"
    state = json.loads((step2 / "trainer_state.json").read_text())
    # the step edited (manifest updated to match): the directory's name disagrees
    (step2 / "trainer_state.json").write_text(json.dumps({**state, "step": 99}))
    _rewrite_manifest(step2)
    before = (run / "metadata.json").read_bytes()
    with pytest.raises(CheckpointError, match=r"trainer_state\.json says step 99, the directory step_2"):
        grpo.main([*args, "--resume_from_checkpoint", str(step2)])
    assert (run / "metadata.json").read_bytes() == before
    # directory renamed along with it: the data position is not where 99 steps end
    step2.rename(run / "checkpoints/step_99")
    with pytest.raises(CheckpointError, match=r"data position \(epoch 0, record 4\) is not where 99 steps"):
        grpo.main([*args, "--resume_from_checkpoint", str(run / "checkpoints/step_99")])
    # latest skips it as damaged and resumes step_1
    with caplog.at_level(logging.WARNING):
        grpo.main([*args, "--resume_from_checkpoint", "latest"])
    assert "step_99 is damaged (trainer_state.json" in caplog.text
    assert json.loads((run / "metadata.json").read_text())["resumed_from"].endswith("step_1")


# -- crashes that named nothing -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("per_device_train_batch_size: [2]\n", "expected an integer"),
        ("num_generations: 2.5\n", "expected an integer"),
    ],
)
def test_a_bad_yaml_value_fails_at_parse_time_leaving_nothing(
    grpo, tiny_bench, tiny_model_dir, train_file, tmp_path, yaml_text, message
):
    config = tmp_path / "bad.yaml"
    config.write_text((Path(grpo.__file__).parent / "configs/tiny_cpu.yaml").read_text() + yaml_text)
    out = tmp_path / "run"
    args = grpo_args(tiny_bench, train_file, tiny_model_dir, out, "--max_steps", "1", *FAST)
    args[1] = str(config)
    with pytest.raises(ConfigError, match=f"{config}: .*{message}"):
        grpo.main(args)
    assert not out.exists()


def test_a_reward_file_that_raises_on_import_is_named(tmp_path):
    broken = tmp_path / "broken_reward.py"
    broken.write_text(
        "import math\n\nraise RuntimeError('no API key')\n\ndef r(completions, **kw):\n    return [0.0]\n"
    )
    with pytest.raises(
        ConfigError, match=rf"importing {broken} failed at {broken}, line 3: RuntimeError: no API key"
    ):
        from invert4tvg.config_checks import check_rewards

        check_rewards([f"{broken}:r"], None)
    syntax = tmp_path / "syntax_reward.py"
    syntax.write_text("def r(completions, **kw)\n    return [0.0]\n")
    with pytest.raises(ConfigError, match=rf"at {syntax}, line 1: SyntaxError"):
        check_rewards([f"{syntax}:r"], None)


@pytest.mark.parametrize(
    "fmt, content, where",
    [
        ("charades-sta", b"v1 0.5 1.5##a person sits.\nv1 1.0 2.0##caf\xe9 time.\n", "line 2"),
        ("activitynet", b'{"v_a": {"duration": 5,\n "timestamps": [[0, 1]], "sentences": ["caf\xe9"]}}', "line 2"),
        ("qvhighlights", b'{"qid": 1, "query": "caf\xe9", "vid": "a", "duration": 5, "relevant_windows": [[0, 1]]}\n',
         "line 1"),
    ],
)  # fmt: skip
def test_non_utf8_annotations_name_the_line(fmt, content, where, tmp_path, capsys):
    ann = tmp_path / "ann.txt"
    ann.write_bytes(content)
    with pytest.raises(DataError, match=rf"ann.txt, {where}: malformed \(not UTF-8 text: byte 0xe9"):
        load_records(fmt, ann, {"v1": 10.0})
    durations = tmp_path / "durations.txt"
    durations.write_text("v1 10\n")
    code, report, _ = _data_check(
        capsys, "--format", fmt, "--annotations", str(ann), "--durations", str(durations)
    )
    assert code == 2 and report["fatal"]["where"] == where


def test_an_empty_training_file_is_named_and_leaves_the_previous_run_whole(
    grpo, finished, tiny_bench, tiny_model_dir, tmp_path
):
    empty = write_json(tmp_path / "empty.json", {})
    run = copy_run(finished, tmp_path / "run")
    before = {p: (run / p).read_bytes() for p in files_under(run) if (run / p).is_file()}
    args = grpo_args(tiny_bench, empty, tiny_model_dir, run, "--max_steps", "1", *FAST)
    with pytest.raises(
        DataError, match=rf"{empty}, file: no_records \(no usable train sample: it is empty\)"
    ):
        grpo.main([*args, "--overwrite_output_dir", "true"])  # the failed start must not remove the old run
    assert {p: (run / p).read_bytes() for p in files_under(run) if (run / p).is_file()} == before
    fresh = tmp_path / "fresh"
    with pytest.raises(DataError, match="no_records"):
        grpo.main(grpo_args(tiny_bench, empty, tiny_model_dir, fresh, "--max_steps", "1", *FAST))
    assert not fresh.exists()
    with pytest.raises(OutputDirError):  # the untouched run is still protected
        grpo.main(args)


def _truncate_weights(directory: Path) -> Path:
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    return weights


def test_truncated_weights_name_the_checkpoint(
    grpo, finished, tiny_bench, tiny_model_dir, train_file, tmp_path
):
    run = copy_run(finished, tmp_path / "run")
    step2 = run / "checkpoints/step_2"
    _truncate_weights(step2 / "model")
    _rewrite_manifest(step2)  # the manifest matches: only reading the file finds the damage
    args = grpo_args(tiny_bench, train_file, tiny_model_dir, run, "--max_steps", "3", *FAST)
    with pytest.raises(CheckpointError, match=rf"{step2 / 'model'}: a weights file cannot be read"):
        grpo.main([*args, "--resume_from_checkpoint", str(step2)])


@pytest.mark.parametrize("damage", ["pickled", "truncated"])
def test_eval_insists_on_readable_safetensors_and_names_the_model(
    finished, tiny_bench, tmp_path, capsys, damage
):
    model = tmp_path / "model"
    shutil.copytree(finished / "final", model)
    if damage == "pickled":
        state = load_file(model / "model.safetensors")
        (model / "model.safetensors").unlink()
        torch.save(state, model / "pytorch_model.bin")
        expected = "holds pytorch_model.bin (a pickle, which can run code when loaded) and no *.safetensors"
    else:
        _truncate_weights(model)
        expected = "cannot load it (SafetensorError"
    code = cli(
        [
            "eval",
            "--model",
            str(model),
            "--data",
            str(tiny_bench),
            "--split",
            "test",
            "--out",
            str(tmp_path / "e"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"invert4tvg eval: error: model {model}: ")
    assert expected in err[-1]
    assert not (tmp_path / "e").exists()

"""Rollout workers on Ray surviving failures: real Ray, real processes killed with SIGKILL.

A worker killed mid-generation is restarted, reloads the current weights and regenerates its shard with the
same seeds, so the batch comes back identical; a GRPO run that loses a worker in step 2 finishes with the same
metrics and weights as one that did not. Retries and restarts are bounded, and the errors say what failed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from invert4tvg.builders import build_engine
from invert4tvg.config import ModelArguments
from invert4tvg.data.frames import VideoSpec
from invert4tvg.data.video import decode_video
from invert4tvg.modeling.logprobs import TokenConstraint
from invert4tvg.modeling.processing import eos_token_ids
from invert4tvg.policy.loading import load_policy
from invert4tvg.rollout.base import SamplingParams, StaleWeightsError
from invert4tvg.rollout.ray_pool import RayEnginePool, RolloutWorkerError
from invert4tvg.workflows.recipe_loader import load_recipe

REPO = Path(__file__).resolve().parents[1]
# Ray started once for the module (pools join it), and nothing left behind afterwards (conftest.ray_session).
pytestmark = pytest.mark.usefixtures("ray_session")


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def kill_when_busy(pid: int, ticks: int = 5, timeout: float = 30.0) -> threading.Thread:
    """SIGKILL ``pid`` once it has used ``ticks`` more CPU ticks (10 ms each): mid-generation, not before the
    call reached it nor after it finished."""

    def watch() -> None:
        start, deadline = cpu_ticks(pid), time.monotonic() + timeout
        while cpu_ticks(pid) - start < ticks and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def wait_dead(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().split(")")[-1].split()[0] in ("Z", "X"):
                    return
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still alive")


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tiny_bench, tiny_sampling):
    args = ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32", freeze_vision_tower=False)
    policy = load_policy(args)
    paths = sorted((tiny_bench / "videos").glob("*.mp4"))[:4]
    videos = [decode_video(VideoSpec(str(p), None, tiny_sampling)) for p in paths]
    message = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "When does it move?"}]}
    ]
    requests = [policy.rollout_request(message, v, 6, f"clip-{i}") for i, v in enumerate(videos)]
    return args, policy, requests


@pytest.fixture(scope="module")
def pool(setup):
    args, policy, _ = setup
    engine = build_engine("ray-hf", policy, model_args=args, workers=2, seed=3)
    assert isinstance(engine, RayEnginePool)
    yield engine
    engine.close()


def token_ids(groups):
    return [[c.token_ids for c in g] for g in groups]


def test_a_worker_killed_mid_generation_is_replaced_and_the_batch_is_unchanged(pool, setup):
    _, _, requests = setup
    sampling = SamplingParams(temperature=1.0, max_tokens=64, seed=11)
    reference = token_ids(pool.generate(requests, sampling))
    restarts, retried, pids = pool.restarts, pool.retried_shards, pool.worker_pids()
    kill_when_busy(pids[0])
    again = pool.generate(requests, sampling)
    assert token_ids(again) == reference  # same shard, same seed, same weights: same completions
    assert pool.restarts == restarts + 1
    assert pool.retried_shards == retried + 1  # it died while its shard was in flight
    assert pool.worker_pids()[0] != pids[0] and pool.worker_pids()[1] == pids[1]
    assert {c.policy_version for g in again for c in g} == {pool.policy_version}


def test_workers_honour_a_heads_token_constraint(pool, setup):
    """The frame_seg head's constraint travels with the request into the Ray workers' engines."""
    _, policy, requests = setup
    constraint = TokenConstraint(
        tuple(policy.processor.tokenizer.convert_tokens_to_ids(["0", "1"])),
        5,
        tuple(eos_token_ids(policy.model, policy.processor.tokenizer)),
    )
    constrained = [dataclasses.replace(r, constraint=constraint, num_samples=2) for r in requests]
    groups = pool.generate(constrained, SamplingParams(temperature=1.0, max_tokens=8, seed=5))
    for completion in (c for g in groups for c in g):
        assert len(completion.text) == 5 and set(completion.text) <= {"0", "1"}, completion.text
        assert completion.finish_reason == "stop"


def test_workers_return_the_hidden_states_a_readout_asks_for(pool, setup):
    """A head that reads hidden states (loc, meco) gets them from Ray workers' HF engines with the completions."""
    from invert4tvg.modeling.readout import HiddenReadout, frame_features

    _, policy, requests = setup
    vocab = policy.model.get_output_embeddings().weight.shape[0]  # (beyond the tokenizer's: padded rows)
    every_token = HiddenReadout(tuple(range(vocab)), -1)
    asked = [dataclasses.replace(r, readout=every_token, num_samples=2) for r in requests[:2]]
    groups = pool.generate(asked, SamplingParams(temperature=1.0, max_tokens=8, seed=5))
    for request, group in zip(asked, groups):
        batch = policy.sequence_batch([request], [group[:1]])
        with torch.no_grad():
            out = policy.model(**batch.inputs, output_hidden_states=True, use_cache=False)
        grid, video_id = (
            batch.inputs["video_grid_thw"],
            policy.processor.tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        )
        expected = frame_features(out.hidden_states[-1], batch.inputs["input_ids"], grid, video_id, 2)[0]
        for completion in group:
            states = completion.hidden
            torch.testing.assert_close(states.frames, expected, atol=1e-4, rtol=1e-4)
            # every generated token but possibly the last (never fed back) has its state
            assert states.token_ids == completion.token_ids[: len(states.token_ids)]
            assert len(states.token_ids) >= len(completion.token_ids) - 1 and len(states.tokens) == len(
                states.token_ids
            )


def test_a_worker_dead_between_steps_is_replaced_at_the_next_weight_sync(pool, setup):
    _, policy, requests = setup
    victim = pool.worker_pids()[1]
    os.kill(victim, signal.SIGKILL)
    wait_dead(victim)
    restarts = pool.restarts
    version = pool.policy_version + 1
    pool.update_weights(policy.weights_for_sync(), version)
    assert pool.restarts == restarts + 1 and pool.policy_version == version
    out = pool.generate(requests, SamplingParams(temperature=0.0, max_tokens=8))
    assert {c.policy_version for g in out for c in g} == {version}
    assert pool.stats()["rollout/restarts"] == pool.restarts


def test_retries_and_restarts_are_bounded_with_clear_errors(pool, setup):
    requests = setup[2][:2]  # one per worker
    sampling = SamplingParams(temperature=1.0, max_tokens=64, seed=5)
    pool.max_retries = 0
    try:
        kill_when_busy(pool.worker_pids()[0])
        with pytest.raises(
            RolloutWorkerError, match=r"rollout worker 0 died 1 times while generating requests"
        ):
            pool.generate(requests, sampling)
    finally:
        pool.max_retries = 2
    pool.max_restarts = pool.restarts  # worker 0 is still dead: replacing it would be one restart too many
    try:
        with pytest.raises(RolloutWorkerError, match="gives up"):
            pool.generate(requests, sampling)
    finally:
        pool.max_restarts = None
    assert len(token_ids(pool.generate(requests, sampling))) == 2  # within the bounds the pool recovers


def test_a_worker_refuses_a_version_it_does_not_hold(pool):
    import ray

    call = pool._actors[0].generate.remote(
        [("hi", 1, "x", None)], SamplingParams(max_tokens=2), pool.policy_version + 5
    )
    with pytest.raises(StaleWeightsError, match="rollout worker 0 serves policy version"):
        ray.get(call)
    with pytest.raises(StaleWeightsError):
        pool.update_weights({}, pool.policy_version - 1)
    with pytest.raises(ValueError, match="holds its own model copies"):
        pool.update_weights(None, pool.policy_version + 1)


def test_each_clip_enters_the_object_store_once(pool, setup, monkeypatch):
    import ray

    _, _, requests = setup
    shared = [
        requests[0],
        requests[1],
        type(requests[0])(requests[0].prompt + " again", requests[0].video, 2, "dup"),
    ]
    puts = []
    real_put = ray.put
    monkeypatch.setattr(
        ray, "put", lambda value, **kw: puts.append(type(value).__name__) or real_put(value, **kw)
    )
    out = pool.generate(shared, SamplingParams(temperature=0.0, max_tokens=4))
    assert puts.count("DecodedVideo") == 2  # three requests, two distinct clips
    assert [len(g) for g in out] == [6, 6, 2]


# -- a GRPO run that loses a worker ---------------------------------------------------------------------------
def run_grpo(recipe, monkeypatch, bench: Path, model: Path, out: Path, kill_at_call: int | None):
    """Run the GRPO recipe with ray-hf and 2 workers; optionally SIGKILL worker 0 during a generate call."""
    engines = []
    real_build = recipe.build_engine

    def build_and_watch(*args, **kwargs):
        engine = real_build(*args, **kwargs)
        engines.append(engine)
        generate, calls = engine.generate, []

        def generate_with_kill(requests, sampling):
            calls.append(1)
            if len(calls) == kill_at_call:
                kill_when_busy(engine.worker_pids()[0], ticks=2)
            return generate(requests, sampling)

        engine.generate = generate_with_kill
        return engine

    monkeypatch.setattr(recipe, "build_engine", build_and_watch)
    recipe.main(
        [
            "--config", str(REPO / "recipes/configs/tiny_cpu.yaml"),
            "--model_name_or_path", str(model),
            "--train_annotations", str(bench / "train.json"),
            "--val_annotations", "", "--test_annotations", "",
            "--video_dir", str(bench / "videos"),
            "--frame_cache_dir", str(out.parent / "frame-cache"),
            "--output_dir", str(out),
            "--per_device_train_batch_size", "8",
            "--num_generations", "4",
            "--max_completion_length", "24",
            "--max_steps", "3",
            "--save_steps", "0",
            "--report_to", "none",
            "--rollout_backend", "ray-hf",
            "--rollout_workers", "2",
        ]
    )  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return engines[0], rows


def test_grpo_run_survives_a_killed_worker_with_the_same_data(
    tiny_bench, tiny_model_dir, tmp_path, monkeypatch
):
    recipe = load_recipe("grpo_qwen25vl")
    calm, calm_rows = run_grpo(recipe, monkeypatch, tiny_bench, tiny_model_dir, tmp_path / "calm", None)
    hit, hit_rows = run_grpo(
        recipe, monkeypatch, tiny_bench, tiny_model_dir, tmp_path / "killed", kill_at_call=2
    )
    assert calm.restarts == 0 and hit.restarts == 1
    assert [r["step"] for r in hit_rows] == [1, 2, 3]
    # the pool's counters reach the step log (docs/training.md lists rollout/restarts)
    assert [r["rollout/restarts"] for r in calm_rows] == [0, 0, 0] and hit_rows[-1]["rollout/restarts"] == 1

    def steady(row):  # everything but wall-clock measurements and the rollout pool's own counters
        return {
            k: v for k, v in row.items() if not k.startswith(("time/", "rollout/")) and k != "tokens_per_s"
        }

    assert [steady(r) for r in hit_rows] == [steady(r) for r in calm_rows]
    a, b = (
        load_file(tmp_path / "calm/final/model.safetensors"),
        load_file(tmp_path / "killed/final/model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_runs_sync_adapters_only_and_workers_serve_them(tiny_model_dir, setup):
    _, _, requests = setup
    args = ModelArguments(
        model_name_or_path=str(tiny_model_dir), dtype="float32", use_peft=True, lora_r=4, lora_alpha=8
    )
    policy = load_policy(args)
    engine = build_engine("ray-hf", policy, model_args=args, workers=1, seed=0)
    try:
        with torch.no_grad():
            for name, param in policy.model.named_parameters():
                if "lora_B" in name:  # peft starts B at zero: make the adapters matter
                    param.add_(torch.randn_like(param) * 0.3)
        payload = policy.weights_for_sync()
        assert all("lora_" in name for name in payload)
        engine.update_weights(payload, 1)
        assert engine.last_sync["bytes"] == sum(t.numel() * t.element_size() for t in payload.values())
        out = engine.generate(requests[:2], SamplingParams(temperature=1.0, max_tokens=10, seed=3))
        batch = policy.sequence_batch(requests[:2], out)
        with torch.no_grad():
            expected = policy.completion_logprobs(policy.model.eval(), batch, 1.0)
        for row, c in enumerate(c for g in out for c in g):
            torch.testing.assert_close(
                torch.tensor(c.logprobs), expected[row, : len(c.token_ids)], rtol=0, atol=1e-4
            )
    finally:
        engine.close()

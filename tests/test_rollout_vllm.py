"""The vLLM engine's parts that need no engine: sync buckets, fused layers, options, placement per rank, memory
check, importance weights. The engine itself runs against the real vLLM 0.32.0 in ``make test-vllm``
(tests/test_rollout_contract.py's vllm cases, tests/test_vllm_engine.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from invert4tvg.config import GRPOArguments
from invert4tvg.grpo.sampling_correction import SamplingCorrection, importance_weights
from invert4tvg.rollout import cluster
from invert4tvg.rollout.base import Completion
from invert4tvg.rollout.options import engine_options
from invert4tvg.rollout.ray_pool import worker_env
from invert4tvg.rollout.vllm_engine import tensor_buckets, wire_buckets
from invert4tvg.rollout.vllm_placement import placement, refuse_memory_fraction
from invert4tvg.rollout.vllm_worker import decode_wire_chunk
from invert4tvg.rollout.weights import checkpoint_numel, fused_siblings

ROOT = Path(__file__).resolve().parents[1]


# -- 1. weights as they travel -----------------------------------------------------------------------------------
def test_wire_buckets_are_bounded_and_bit_exact():
    generator = torch.Generator().manual_seed(0)
    weights = {
        "a.weight": torch.randn(64, 32, generator=generator).to(torch.bfloat16),  # 4 KB
        "b.bias": torch.randn(3, generator=generator),
        "c.weight": torch.randn(5, 7, generator=generator).half(),
        "d.weight": torch.randn(40, 40, generator=generator),  # 6.4 KB: a bucket of its own
    }
    buckets = list(wire_buckets(iter(weights.items()), bucket_bytes=4096))  # an iterator, consumed once
    assert [len(index) for index, _ in buckets] == [1, 3]
    got = {}
    for index, data in buckets:
        json.dumps(index)  # only msgpack-native types: they survive vLLM's serialisation between processes
        got.update(decode_wire_chunk(index, bytes(data)))
    assert list(got) == list(weights)
    for name, tensor in weights.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    in_process = list(tensor_buckets(weights.items(), bucket_bytes=4096))
    assert [[n for n, _ in b] for b in in_process] == [["a.weight"], ["b.bias", "c.weight", "d.weight"]]
    assert in_process[0][0][1] is weights["a.weight"]  # by reference: no copy


def test_fused_layers_are_completed():
    """vLLM fuses q/k/v and gate/up: a LoRA sync that adapts q and v must also send k (from the checkpoint)."""
    names = [
        "model.language_model.layers.0.self_attn.q_proj.weight",
        "model.language_model.layers.0.mlp.up_proj.weight",
    ]
    assert fused_siblings(names) == sorted(
        [
            "model.language_model.layers.0.self_attn.q_proj.weight",
            "model.language_model.layers.0.self_attn.k_proj.weight",
            "model.language_model.layers.0.self_attn.v_proj.weight",
            "model.language_model.layers.0.mlp.gate_proj.weight",
            "model.language_model.layers.0.mlp.up_proj.weight",
        ]
    )
    assert fused_siblings(["model.language_model.norm.weight"]) == []


# -- 2. options from the configuration ------------------------------------------------------------------------------
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


# -- 3. colocated engines: one per rank, on its device, with the memory it needs ---------------------------------------
def two_ranks(out: Path, tiny_model: Path | None = None) -> list[dict]:
    """What each rank of ``torchrun --nproc_per_node 2`` (gloo) passes to vLLM (tests/vllm_placement_worker.py);
    with ``tiny_model``, also how vLLM's own ``EngineArgs`` reads it (needs vLLM)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if tiny_model is not None:
        env["TINY_MODEL"] = str(tiny_model)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    cmd += [str(ROOT / "tests" / "vllm_placement_worker.py"), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_each_of_two_ranks_passes_its_own_placement_to_vllm(tmp_path):
    """Each rank's engine runs vLLM's external launcher in the trainer's process with that rank's environment,
    device and seed (tests/test_vllm_engine.py checks vLLM's own reading of it)."""
    for rank, got in enumerate(two_ranks(tmp_path)):
        assert got["llm_kwargs"] == {"distributed_executor_backend": "external_launcher", "seed": 7 + rank}
        assert got["env"]["RANK"] == got["env"]["LOCAL_RANK"] == str(rank) and got["env"]["WORLD_SIZE"] == "2"
        assert got["env"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        assert got["device"] == (f"cuda:{rank}" if torch.cuda.is_available() else "cpu")


def test_one_process_and_ray_workers_keep_vllms_defaults():
    one = placement(True, 1, 3, env={})
    assert one.llm_kwargs == {"seed": 3} and one.env == {}
    launched = {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "2"}
    assert placement(False, 1, 3, env=launched).llm_kwargs == {"seed": 3}  # a Ray worker's engine is its own
    with pytest.raises(ValueError, match="ray-vllm for tensor parallelism"):
        placement(True, 2, 3, env=launched)


def test_a_memory_fraction_too_small_for_the_weights_is_refused_with_the_numbers(tiny_model_dir):
    weights_7b = 8_290_000_000 * 2  # Qwen2.5-VL-7B, bf16
    with pytest.raises(ValueError) as err:
        refuse_memory_fraction(
            "Qwen/Qwen2.5-VL-7B-Instruct", weights_7b, torch.bfloat16, 0.3, "cuda:1", 40 * 10**9
        )
    message = str(err.value)
    assert "0.3 x 40.0 GB (cuda:1) = 12.0 GB cannot hold the 16.6 GB of bfloat16 weights" in message
    assert "at least 0.46" in message
    refuse_memory_fraction(
        "Qwen/Qwen2.5-VL-7B-Instruct", weights_7b, torch.bfloat16, 0.5, "cuda:1", 40 * 10**9
    )
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert checkpoint_numel(str(tiny_model_dir)) == sum(p.numel() for p in model.parameters())


# -- 4. Ray's GPUs and environment --------------------------------------------------------------------------------
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


# -- 5. engine vs trainer log-probabilities -----------------------------------------------------------------------
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


# -- 6. what the vLLM modules cite exists --------------------------------------------------------------------------
def test_cited_test_files_exist():
    for module in (ROOT / "invert4tvg" / "rollout").glob("*.py"):
        for cited in re.findall(r"tests/[\w/]+\.py", module.read_text()):
            assert (ROOT / cited).exists(), f"{module.name} cites {cited}, which does not exist"


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

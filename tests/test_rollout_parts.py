"""The pieces of the rollout engines that need neither Ray nor vLLM: sharding, seeds, the weight log, LoRA
merging (checked against peft), checkpoint reading, the inputs the vLLM engine hands vLLM, and build_engine."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from invert4tvg.builders import build_engine
from invert4tvg.config import ModelArguments
from invert4tvg.data.frames import VideoSpec
from invert4tvg.data.video import decode_video
from invert4tvg.modeling.processing import processor_inputs, video_processor_kwargs
from invert4tvg.policy.loading import load_policy
from invert4tvg.rollout.base import RolloutRequest
from invert4tvg.rollout.sharding import expected_work, plan_shards, shard_seed
from invert4tvg.rollout.vllm_engine import vllm_video_inputs
from invert4tvg.rollout.weights import (
    WeightLog,
    is_lora_payload,
    lora_base_names,
    merge_lora,
    pack_weights,
    payload_nbytes,
    read_checkpoint_tensors,
    unpack_weights,
)

MESSAGES = [
    {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "When does it shrink?"}]}
]


# -- sharding -------------------------------------------------------------------------------------------------
def test_plan_shards_balances_and_keeps_order():
    shards = plan_shards([10, 1, 1, 1, 7], 2)
    assert shards == [[0], [1, 2, 3, 4]]  # loads 10 and 10
    assert plan_shards([3, 2], 4) == [[0], [1], [], []]
    assert plan_shards([], 3) == [[], [], []]
    with pytest.raises(ValueError):
        plan_shards([1.0], 0)


@pytest.mark.parametrize("seed", range(20))
def test_plan_shards_is_a_partition_within_the_list_scheduling_bound(seed):
    rng = random.Random(seed)
    costs = [rng.uniform(1, 100) for _ in range(rng.randint(1, 30))]
    workers = rng.randint(1, 6)
    shards = plan_shards(costs, workers)
    assert sorted(i for s in shards for i in s) == list(range(len(costs)))
    assert all(s == sorted(s) for s in shards)
    makespan = max(sum(costs[i] for i in s) for s in shards)
    assert makespan <= sum(costs) / workers + max(costs) + 1e-9
    assert plan_shards(costs, workers) == shards  # a pure function: a retried shard is the same shard


def test_expected_work_counts_samples_prompt_and_video():
    frames = np.zeros((8, 56, 56, 3), dtype=np.uint8)
    from invert4tvg.data.frames import DecodedVideo

    video = DecodedVideo(frames, np.arange(8) / 2, np.arange(8), 2.0, 8, "v.mp4")
    text = RolloutRequest("x" * 40, None, num_samples=1)
    with_video = RolloutRequest("x" * 40, video, num_samples=1)
    assert expected_work(text, 10) == 10 + 10
    assert expected_work(with_video, 10) == 10 + 10 + 4 * 2 * 2  # 4 temporal patches of 2x2 merged tokens
    assert expected_work(RolloutRequest("x" * 40, video, num_samples=8), 10) == 8 * expected_work(
        with_video, 10
    )


def test_shard_seed_is_stable_and_spread():
    assert shard_seed(0, 1, 2, 3) == shard_seed(0, 1, 2, 3)
    seeds = {shard_seed(0, v, c, w) for v in range(5) for c in range(5) for w in range(4)}
    assert len(seeds) == 100
    assert all(0 <= s < 2**31 for s in seeds)


# -- weight payloads ------------------------------------------------------------------------------------------
def test_weight_log_keeps_what_a_new_worker_must_replay():
    log: WeightLog[str] = WeightLog()
    log.add("full-1", ["a", "b", "c"])
    log.add("full-2", ["a", "b", "c"])
    assert log.handles() == ["full-2"]
    log.add("partial", ["b"])
    assert log.handles() == ["full-2", "partial"]
    log.add("full-3", ["a", "b", "c", "d"])
    assert log.handles() == ["full-3"]


@pytest.fixture(scope="module")
def lora_policy(tiny_model_dir):
    args = ModelArguments(
        model_name_or_path=str(tiny_model_dir),
        dtype="float32",
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        freeze_vision_tower=True,
    )
    policy = load_policy(args)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero, which would make any merge trivially right
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return args, policy


def test_lora_payload_is_adapters_only_and_merges_like_peft(lora_policy, tiny_model_dir):
    args, policy = lora_policy
    payload = policy.weights_for_sync()
    assert payload and all(".lora_A." in n or ".lora_B." in n for n in payload)
    assert is_lora_payload(payload)
    full = sum(p.numel() * p.element_size() for p in policy.model.get_base_model().parameters())
    assert payload_nbytes(payload) < full / 4

    base = read_checkpoint_tensors(str(tiny_model_dir), lora_base_names(payload))
    merged = merge_lora(base, payload, args.lora_alpha / args.lora_r)
    unloaded = copy.deepcopy(policy.model).merge_and_unload().state_dict()  # peft's merge, on a copy
    assert set(merged) == set(lora_base_names(payload))
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, unloaded[name], rtol=0, atol=1e-6)
        assert not torch.equal(tensor, base[name])  # the adapters really changed the weight


def test_read_checkpoint_tensors_finds_legacy_names_and_index(tmp_path):
    tensors = {
        "model.layers.0.mlp.up_proj.weight": torch.ones(2, 2),
        "visual.blocks.0.attn.qkv.weight": torch.zeros(3),
    }
    save_file(tensors, tmp_path / "part-1.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": dict.fromkeys(tensors, "part-1.safetensors")})
    )
    out = read_checkpoint_tensors(
        str(tmp_path),
        ["model.language_model.layers.0.mlp.up_proj.weight", "model.visual.blocks.0.attn.qkv.weight"],
    )
    assert torch.equal(out["model.language_model.layers.0.mlp.up_proj.weight"], torch.ones(2, 2))
    with pytest.raises(KeyError, match="not in the checkpoint"):
        read_checkpoint_tensors(str(tmp_path), ["lm_head.weight"])


# -- the vLLM engine's inputs ---------------------------------------------------------------------------------
def test_vllm_video_inputs_reproduce_the_processor_path(tiny_model_dir, tiny_bench, tiny_sampling):
    """vLLM calls the HF processor with the item's frames and metadata plus ``mm_processor_kwargs``; doing the
    same here must give the trainer's tensors and timing (``second_per_grid_ts``) exactly."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    video_path = sorted((tiny_bench / "videos").glob("*.mp4"))[0]
    video = decode_video(VideoSpec(str(video_path), (1.0, 6.0), tiny_sampling))
    prompt = processor.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    (frames, metadata), uuid = vllm_video_inputs(video)
    as_vllm = processor(
        text=[prompt],
        videos=[frames],
        video_metadata=[metadata],
        return_tensors="pt",
        **video_processor_kwargs(processor),
    )
    trainer = processor_inputs(processor, [prompt], [video])
    for key in ("input_ids", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
        torch.testing.assert_close(as_vllm[key], trainer[key], rtol=0, atol=0)
    expected = 2 / video.sampled_fps  # temporal_patch_size / sampled fps, not the processor's 24 fps default
    assert float(trainer["second_per_grid_ts"][0]) == pytest.approx(expected)

    # the cache id covers timing: the same frames with another fps are a different item
    other = type(video)(**{**video.__dict__, "source_fps": video.source_fps * 2})
    assert vllm_video_inputs(other)[1] != uuid
    assert vllm_video_inputs(video)[1] == uuid


# -- build_engine ---------------------------------------------------------------------------------------------
def test_build_engine_rejects_unknown_backends_and_missing_model_args(tiny_model_dir):
    policy = load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32"))
    assert build_engine("hf", policy).shares_model
    with pytest.raises(ValueError, match="unknown rollout backend"):
        build_engine("sglang", policy)
    with pytest.raises(ValueError, match="needs model_args"):
        build_engine("ray-hf", policy, workers=2)


def test_vllm_backend_explains_what_is_missing(tiny_model_dir):
    try:
        import vllm  # noqa: F401
    except Exception:
        args = ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32")
        policy = load_policy(args)
        with pytest.raises(ImportError, match=r"invert4tvg\[vllm\]"):
            build_engine("vllm", policy, model_args=args)
    else:
        pytest.skip("vLLM is importable here; tests/test_rollout_contract.py runs the engine itself")


def test_docs_name_every_backend():
    text = (Path(__file__).resolve().parents[1] / "docs/rollouts.md").read_text()
    for backend in ("hf", "ray-hf", "vllm", "ray-vllm"):
        assert f"`{backend}`" in text


def test_packed_weights_round_trip_every_dtype_and_layout():
    weights = {
        "fp32": torch.randn(3, 4),
        "bf16": torch.randn(5).to(torch.bfloat16),
        "int64": torch.arange(6).reshape(2, 3),
        "empty": torch.zeros(0),
        "transposed": torch.randn(4, 3).t(),
    }
    packed = pack_weights(weights)
    assert packed.buffer.dtype == np.uint8 and len(packed) == len(weights)
    restored = unpack_weights(packed)
    for name, tensor in weights.items():
        assert restored[name].dtype == tensor.dtype and torch.equal(restored[name], tensor)

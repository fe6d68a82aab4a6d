"""FSDP2 on 2 CPU processes (gloo, ``torchrun --nproc_per_node 2``) against one unsharded process.

One 2-process launch (``distributed_worker.fsdp_suite``) runs everything sharded; the test then computes the same
things in this process without sharding and compares:

- 3 GRPO updates on a fixed global batch (fp32): loss, gradient norm before clipping and every weight, with one and
  with two micro-batches per process, one optimizer step per update;
- seeded rollouts of each process's own prompts, of unequal lengths, through the sharded model (gathered once per
  ``generate`` call), and the weight-sync payload (whole tensors read from the shards);
- under bf16 autocast, the sharded reference equals the sharded policy at step 0 (KL = 0) and keeps its buffers'
  dtypes.

The recipes themselves then run sharded: GRPO through a sharded checkpoint and a bit-exact resume to a consolidated
``final/``, and the SFT warm start against DDP.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from accelerate import Accelerator
from test_distributed_training import torchrun


@pytest.fixture(scope="module")
def sharded(tiny_model_dir, tiny_bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    torchrun(2, "fsdp", "--model", str(tiny_model_dir), "--bench", str(tiny_bench), "--out", str(out))
    return out


@pytest.mark.parametrize("micro", [4, 2], ids=["1-micro-batch", "2-micro-batches"])
def test_fsdp2_updates_equal_one_unsharded_process(sharded, tiny_model_dir, tiny_bench, tmp_path, micro):
    import distributed_worker

    two = json.loads((sharded / f"micro{micro}/stats.json").read_text())
    two_weights = torch.load(sharded / f"micro{micro}/weights.pt", weights_only=True)
    one = distributed_worker.run_steps(
        str(tiny_model_dir), str(tiny_bench), str(tmp_path), 3, micro, Accelerator(cpu=True)
    )
    assert two["sharded"] and not one["sharded"] and two["world"] == 2
    assert two["optimizer_steps"] == one["optimizer_steps"] == 3
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5, abs=1e-7)
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-5)
    assert two["kl"] == pytest.approx(one["kl"], rel=1e-4, abs=1e-8)
    assert one["kl"][0] == 0.0 and one["kl"][2] > 0  # the updates moved the policy away from the reference
    assert set(two_weights) == set(one["weights"])
    for name, weight in one["weights"].items():
        torch.testing.assert_close(two_weights[name], weight, rtol=1e-5, atol=2e-6, msg=name)


@pytest.mark.parametrize("variant", ["lora", "lora-warm", "loc", "meco"])
def test_fsdp2_lora_and_hidden_state_heads_train_as_one_process(
    sharded, tiny_model_dir, tiny_bench, tmp_path, variant
):
    """LoRA (reference: the adapter disabled; from a trained adapter: a frozen copy of it) and the heads with a
    module of their own (loc, meco; their auxiliary loss on) under FSDP2: 3 updates equal one unsharded process's,
    and they trained what they should."""
    import distributed_worker

    model, overrides = distributed_worker.VARIANTS[variant.removesuffix("-warm")]
    if variant == "lora-warm":
        tiny_model_dir = sharded / "warm_adapter"
    two = json.loads((sharded / f"{variant}/stats.json").read_text())
    two_weights = torch.load(sharded / f"{variant}/weights.pt", weights_only=True)
    one = distributed_worker.run_steps(
        str(tiny_model_dir),
        str(tiny_bench),
        str(tmp_path),
        3,
        4,
        Accelerator(cpu=True),
        model=model,
        **overrides,
    )
    assert two["sharded"] and two["optimizer_steps"] == one["optimizer_steps"] == 3
    assert all(map(math.isfinite, two["loss"] + two["grad_norm"]))
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5, abs=1e-7)
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-5)
    assert two["kl"] == pytest.approx(one["kl"], rel=1e-4, abs=1e-8)
    assert one["kl"][0] == 0.0 and one["kl"][2] > 0
    assert set(two_weights) == set(one["weights"])
    for name, weight in one["weights"].items():
        torch.testing.assert_close(two_weights[name], weight, rtol=1e-5, atol=2e-6, msg=name)
    start = distributed_worker.initial_weights(str(tiny_model_dir), model)
    moved = {n for n, weight in two_weights.items() if n in start and not torch.equal(weight, start[n])}
    if variant == "lora-warm":  # the reference adapter stays the adapter as loaded
        ref = {name: w for name, w in two_weights.items() if ".ref." in name}
        assert ref and all(
            torch.equal(w, start[name.replace(".ref.", ".default.")]) for name, w in ref.items()
        )
    if variant.startswith("lora"):
        assert moved and all("lora_" in name for name in moved)  # the base model stays frozen
    else:
        assert any("invert4tvg_head" in name for name in moved)  # the auxiliary loss trains the module


def test_rollouts_under_fsdp2_are_the_unsharded_tokens(sharded, tiny_model_dir, tiny_bench, tmp_path):
    import distributed_worker

    trainer, _, _, requests = distributed_worker.setup(str(tiny_model_dir), str(tiny_bench), str(tmp_path))
    share = len(requests) // 2
    for rank, max_tokens in enumerate(distributed_worker.ROLLOUT_TOKENS):
        mine = requests[rank * share : (rank + 1) * share]
        expected = distributed_worker.rollout_tokens(trainer, mine, max_tokens)
        got = json.loads((sharded / f"rollouts_{rank}.json").read_text())
        assert got == expected, f"process {rank}"
        assert all(len(ids) <= max_tokens for group in got for ids in group)
    assert max(len(ids) for group in got for ids in group) <= 5  # process 1 ran fewer forwards than process 0
    # The weight-sync payload of a sharded policy: the whole trainable tensors, as the unsharded policy's.
    sync, expected = torch.load(sharded / "sync.pt", weights_only=True), trainer.policy.weights_for_sync()
    assert sync.keys() == expected.keys() and all(torch.equal(sync[k], expected[k]) for k in expected)


def test_fsdp2_process_without_weights_on_disk_holds_the_checkpoint(sharded, tiny_model_dir):
    """Process 1 built the model on the meta device (only the main process reads the weights): its sharded policy
    and reference are the checkpoint's tensors and its buffers (rotary inv_freq) those of a model loaded from it."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    loaded = torch.load(sharded / "loaded_1.pt", weights_only=True)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32)
    expected = dict(model.named_parameters())
    for key in ("policy", "reference"):
        assert loaded[key].keys() == expected.keys(), key
        for name, tensor in expected.items():
            assert torch.equal(loaded[key][name], tensor), f"{key} {name}"
    for key in ("buffers", "reference_buffers"):
        buffers = dict(model.named_buffers())
        assert loaded[key].keys() == buffers.keys()
        for name, buffer in buffers.items():
            assert loaded[key][name].dtype == buffer.dtype and torch.equal(loaded[key][name], buffer), name


def test_fsdp2_reference_is_the_policy_at_step_0_under_bf16(sharded):
    for rank in (0, 1):
        result = json.loads((sharded / f"bf16_{rank}.json").read_text())
        assert math.isfinite(result.pop("lora_loss"))  # LoRA: a bf16 base and fp32 adapters, one update
        assert result == {"kl": 0.0, "buffers_match": True, "lora_kl": 0.0}


def test_fsdp2_recipe_sharded_checkpoint_resumes_bit_exact_and_final_loads(
    tiny_model_dir, tiny_bench, tmp_path
):
    """The GRPO recipe with fsdp: full_shard on 2 processes, with the loc head (a module of its own, its auxiliary
    loss on): a run resumed from its sharded step-2 checkpoint ends with the straight run's weights, bit for bit;
    final/ is one consolidated safetensors model with the head module's weights in their own file."""
    from safetensors.torch import load_file
    from test_grpo_training import recipe_args
    from transformers import Qwen2_5_VLForConditionalGeneration

    common = [
        "--fsdp",
        "full_shard",
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "2",
    ]  # 1 prompt x G
    common += ["--num_generations", "2", "--test_annotations", ""]
    common += ["--head", "loc", "--head_width", "16", "--head_aux_loss_weight", "0.5"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train = tiny_bench / "train.json"
    torchrun(
        2, "recipe", *recipe_args(tiny_bench, train, tiny_model_dir, straight), *common, "--save_steps", "2"
    )
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["sequences"] == 4  # 2 processes x 1 video x 2 completions
    checkpoint = straight / "checkpoints/step_2"
    assert (checkpoint / "sharded/.metadata").is_file() and not (checkpoint / "optimizer.pt").exists()
    assert not list((checkpoint / "model").glob("*.safetensors"))  # the weights live in the shards
    torchrun(
        2, "recipe", *recipe_args(tiny_bench, train, tiny_model_dir, resumed), *common,
        "--resume_from_checkpoint", str(checkpoint),
    )  # fmt: skip
    for name in ("model.safetensors", "invert4tvg_head.safetensors"):
        a, b = load_file(straight / "final" / name), load_file(resumed / "final" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    a = load_file(straight / "final/model.safetensors")
    start = load_file(tiny_model_dir / "model.safetensors")
    assert a.keys() == start.keys()  # the layout of an unsharded save (a tied LM head stored once)
    assert any(not torch.equal(a[k], start[k]) for k in a)  # it trained
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(straight / "final", dtype=torch.float32)
    model.save_pretrained(tmp_path / "again")  # loaded as saved: writing it back gives the same tensors
    again = load_file(tmp_path / "again/model.safetensors")
    assert again.keys() == a.keys() and all(torch.equal(again[k], a[k]) for k in a)


def test_fsdp2_recipe_with_lora_saves_an_adapter_that_loads(tiny_model_dir, tiny_bench, tmp_path):
    """LoRA under FSDP2 through the recipe (the reference is the policy with its adapter disabled): final/ holds
    the trained adapter alone, which loads onto its base model."""
    from safetensors.torch import load_file
    from test_grpo_training import recipe_args

    from invert4tvg.config import ModelArguments
    from invert4tvg.policy.loading import load_policy

    out = tmp_path / "lora"
    args = recipe_args(tiny_bench, tiny_bench / "train.json", tiny_model_dir, out)
    args += ["--fsdp", "full_shard", "--use_peft", "true", "--lora_r", "4", "--max_steps", "2"]
    args += ["--per_device_train_batch_size", "2", "--num_generations", "2", "--test_annotations", ""]
    torchrun(2, "recipe", *args)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(row["loss"]) for row in rows)
    adapter = load_file(out / "final/adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)
    assert any(bool(t.abs().sum() > 0) for name, t in adapter.items() if "lora_B" in name)  # it trained
    policy = load_policy(ModelArguments(model_name_or_path=str(out / "final")), for_training=False)
    merged = dict(policy.model.named_parameters())
    base = load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir)), for_training=False)
    assert any(not torch.equal(p, merged[n]) for n, p in base.model.named_parameters())


def test_checkpoint_metadata_that_would_run_code_is_refused(tmp_path):
    import os
    import pickle

    from invert4tvg.training.sharded_checkpoint import _MetadataUnpickler

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        _MetadataUnpickler(__import__("io").BytesIO(pickle.dumps(Exploit()))).load()


def test_fsdp2_sft_trains_the_weights_ddp_trains(tiny_model_dir, tiny_bench, tmp_path):
    """The SFT warm start under FSDP2 and under DDP, 2 processes each, the same data: the same final weights (fp32),
    and the sharded run's checkpoint holds shards."""
    from safetensors.torch import load_file

    common = ["--config", "recipes/configs/sft_tiny_cpu.yaml", "--model_name_or_path", str(tiny_model_dir)]
    common += [
        "--train_annotations",
        str(tiny_bench / "train.json"),
        "--video_dir",
        str(tiny_bench / "videos"),
    ]
    common += [
        "--frame_cache_dir",
        "",
        "--per_device_train_batch_size",
        "2",
        "--max_steps",
        "3",
        "--save_steps",
        "2",
    ]
    # Stage 1 too: under FSDP2 the main process trains the tower alone and sharding hands the weights on.
    common += ["--report_to", "none", "--vision_pretrain_epochs", "1"]
    torchrun(2, "sft", *common, "--output_dir", str(tmp_path / "ddp"))
    torchrun(2, "sft", *common, "--output_dir", str(tmp_path / "fsdp"), "--fsdp", "full_shard")
    assert (tmp_path / "fsdp/checkpoints/step_2/sharded/.metadata").is_file()
    ddp, sharded = (
        load_file(tmp_path / "ddp/final/model.safetensors"),
        load_file(tmp_path / "fsdp/final/model.safetensors"),
    )
    start = load_file(tiny_model_dir / "model.safetensors")
    assert ddp.keys() == sharded.keys() and any(not torch.equal(ddp[k], start[k]) for k in ddp)
    for name in ddp:
        torch.testing.assert_close(sharded[name], ddp[name], rtol=1e-5, atol=2e-6, msg=name)

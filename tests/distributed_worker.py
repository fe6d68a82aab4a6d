"""One GRPO update on a fixed global batch, run by every process of ``torchrun --nproc_per_node N`` (or in-process
with one process): writes the loss and the gradients the optimizer sees, for tests/test_distributed_training.py.

The rollouts are built by hand (fixed completion token ids of deliberately unequal lengths, fixed rewards), so a run
with N processes and a run with one process train on exactly the same global batch; every process takes its share
in process order, as :class:`~invert4tvg.training.stream.BatchStream` does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

import invert4tvg  # noqa: F401  (first: torchvision shim)

GLOBAL_INSTANCES = 4
NUM_GENERATIONS = 2
ROLLOUT_TOKENS = (12, 5)  # max new tokens of process 0 and 1 in the sharded rollout check
# Policies trained under FSDP2 beside the full fine-tuning of the default head: (ModelArguments, GRPO overrides).
VARIANTS = {
    "lora": ({"use_peft": True, "lora_r": 4, "lora_alpha": 8}, {}),  # the reference: the adapter disabled
    # hidden-state heads' modules (the auxiliary loss trains them): the last layer, and the one before (meco)
    "loc": ({"head": "loc", "head_width": 16}, {"head_aux_loss_weight": 0.5}),
    "meco": ({"head": "meco", "head_width": 16}, {"head_aux_loss_weight": 0.5}),
}


def model_defaults(model_dir: str) -> dict:
    """The ``ModelArguments`` fields every run here shares (a variant's own fields override them)."""
    return {"model_name_or_path": model_dir, "freeze_vision_tower": False, "lora_dropout": 0.0}


def completion_lengths(n: int) -> list[int]:
    """The first half of the global batch gets short completions, the second long ones: the token counts of the
    processes differ (what the dapo normaliser must gather)."""
    return [2 + (i % 2) if i < n // 2 else 7 + (i % 3) for i in range(n)]


def setup(
    model_dir: str,
    bench: str,
    out: str,
    loss_type: str = "dapo",
    accelerator=None,
    model_dtype: str = "float32",
    model: dict | None = None,
    **overrides,
):
    """A GRPO trainer on this process's share of the fixed global batch, with its rollouts and advantages."""
    from accelerate import Accelerator

    from invert4tvg.config import GRPOArguments, ModelArguments
    from invert4tvg.data.formats import load_records
    from invert4tvg.data.frames import VideoSampling
    from invert4tvg.data.video import decode_video
    from invert4tvg.grpo.experience import Rollouts
    from invert4tvg.grpo.loss import compute_advantages
    from invert4tvg.grpo.trainer import GRPOTrainer
    from invert4tvg.policy.loading import load_policy
    from invert4tvg.rollout.base import Completion
    from invert4tvg.rollout.hf import HFEngine
    from invert4tvg.tasks import TaskSampler
    from invert4tvg.training.fsdp import reads_weights

    accelerator = accelerator or Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    share = GLOBAL_INSTANCES // world
    options = dict(
        output_dir=out,
        num_generations=NUM_GENERATIONS,
        beta=0.04,
        loss_type=loss_type,
        max_completion_length=12,
        # `share` prompts per process in micro-batches of 2 completions: no_sync on all but the last
        per_device_train_batch_size=2,
        gradient_accumulation_steps=share * NUM_GENERATIONS // 2,
        max_steps=1,
        max_grad_norm=0.0,
        report_to=[],
    )
    args = GRPOArguments(**{**options, **overrides})
    torch.manual_seed(0)
    model_args = ModelArguments(**{**model_defaults(model_dir), "dtype": model_dtype, **(model or {})})
    # As the recipe loads: under FSDP2 the main process reads the weights, the others build the model on meta.
    policy = load_policy(model_args, meta=not reads_weights(args, accelerator))
    records = load_records("tvg-json", Path(bench) / "train.json", video_dir=Path(bench) / "videos").records
    records = records[:GLOBAL_INSTANCES]
    mine = records[rank * share : (rank + 1) * share]
    sampler = TaskSampler(p=1.0, seed=0)
    sampling = VideoSampling(min_pixels=3136, total_pixels=200704)
    engine = HFEngine(policy.model, policy.processor)
    trainer = GRPOTrainer(
        policy,
        engine,
        lambda *a, **k: ([], {}),
        sampler,
        lambda recs, tasks: sampler.make_instances(recs, tasks, sampling=sampling),
        mine,
        args,
        accelerator,
    )
    instances = sampler.make_instances(mine, ["tvg"] * len(mine), sampling=sampling)
    requests = [
        policy.rollout_request(inst.messages, decode_video(inst.video), NUM_GENERATIONS, inst.record_id)
        for inst in instances
    ]
    n_global = GLOBAL_INSTANCES * NUM_GENERATIONS
    lengths = completion_lengths(n_global)
    vocab_ids = torch.arange(40, 200)  # ordinary byte-level tokens of the tiny tokenizer
    gen = torch.Generator().manual_seed(1)
    all_ids = [vocab_ids[torch.randint(len(vocab_ids), (n,), generator=gen)].tolist() for n in lengths]
    if getattr(policy, "token_ids", None):  # a hidden-state head (loc, meco): its tokens open every answer
        all_ids = [list(policy.token_ids) + ids for ids in all_ids]
    rewards_global = torch.tensor(lengths, dtype=torch.float32) / 10  # the longer completion of a group wins
    lo, hi = rank * share * NUM_GENERATIONS, (rank + 1) * share * NUM_GENERATIONS
    completions = [
        [
            Completion(all_ids[j], "", [0.0] * len(all_ids[j]), "stop", 0)
            for j in range(lo + g * NUM_GENERATIONS, lo + (g + 1) * NUM_GENERATIONS)
        ]
        for g in range(share)
    ]
    rewards = rewards_global[lo:hi]
    rollouts = Rollouts(
        instances=instances,
        completions=completions,
        batch=policy.sequence_batch(requests, completions),
        rewards=rewards,
        components={},
        columns={
            "task": ["tvg"] * len(rewards),
            **{
                key: [getattr(r, key) for r in mine for _ in range(NUM_GENERATIONS)]
                for key in ("start", "end", "duration")
            },
        },
        truncated=torch.zeros(len(rewards), dtype=torch.bool),
    )
    advantages = compute_advantages(rewards, NUM_GENERATIONS, "group")
    return trainer, rollouts, advantages, requests


def initial_weights(model_dir: str, model: dict | None = None) -> dict[str, torch.Tensor]:
    """The policy's weights as :func:`setup` loads them, before any update."""
    from invert4tvg.config import ModelArguments
    from invert4tvg.policy.loading import load_policy

    torch.manual_seed(0)
    args = ModelArguments(**{**model_defaults(model_dir), **(model or {})})
    return {n: p.detach().clone() for n, p in load_policy(args).model.named_parameters()}


def save_warm_adapter(model_dir: str, out: str) -> str:
    """A LoRA adapter as an SFT warm start leaves it (``lora_B`` not 0), saved with its processor."""
    from invert4tvg.config import ModelArguments
    from invert4tvg.policy.loading import load_policy

    torch.manual_seed(3)
    policy = load_policy(ModelArguments(**{**model_defaults(model_dir), **VARIANTS["lora"][0]}))
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    policy.model.save_pretrained(out)
    policy.processor.save_pretrained(out)
    return out


def record_grads(trainer, into: dict[str, torch.Tensor]) -> None:
    """Keep the whole gradients the optimizer sees at its next step (gathered from the shards under FSDP2)."""
    from invert4tvg.training.fsdp import full_tensor

    step = trainer.optimizer.step

    def record_then_step(*a, **k):
        for name, p in trainer.accelerator.unwrap_model(trainer.model).named_parameters():
            if p.grad is not None:
                into[name] = full_tensor(p.grad.detach()).clone()
        return step(*a, **k)

    trainer.optimizer.step = record_then_step


def run(model_dir: str, bench: str, out: str, loss_type: str = "dapo", accelerator=None) -> dict:
    trainer, rollouts, advantages, _ = setup(model_dir, bench, out, loss_type, accelerator)
    accelerator = trainer.accelerator
    grads: dict[str, torch.Tensor] = {}
    record_grads(trainer, grads)
    stats = trainer.optimise(trainer.prepare_batch(rollouts, advantages.values))
    result = {"loss": stats["loss"], "kl": stats["kl"], "world": accelerator.num_processes}
    if accelerator.is_main_process:
        Path(out).mkdir(parents=True, exist_ok=True)
        torch.save(grads, Path(out) / "grads.pt")
        (Path(out) / "stats.json").write_text(json.dumps(result))
    accelerator.wait_for_everyone()
    return {**result, "grads": grads}


def run_steps(
    model_dir: str, bench: str, out: str, steps: int, micro: int, accelerator=None, **overrides
) -> dict:
    """``steps`` GRPO updates on the fixed global batch (``micro`` sequences per micro-batch), then the losses, the
    gradient norms, the step-0 KL and the whole weights (gathered from the shards under FSDP2)."""
    from invert4tvg.training.fsdp import full_tensor, full_weights

    trainer, rollouts, advantages, _ = setup(
        model_dir, bench, out, "dapo", accelerator, max_steps=steps, max_grad_norm=1.0,
        per_device_train_batch_size=micro, gradient_accumulation_steps=1,  # _update runs on setup's rollouts
        **overrides,
    )  # fmt: skip
    accelerator = trainer.accelerator
    losses, norms, kls = [], [], []
    steps_taken = []
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (steps_taken.append(1), step(*a, **k))[1]
    clip = trainer.accelerator.clip_grad_norm_

    def clip_and_record(*a, **k):  # the norm before clipping
        norms.append(float(full_tensor(clip(*a, **k))))

    trainer.accelerator.clip_grad_norm_ = clip_and_record
    for _ in range(steps):
        stats = trainer.optimise(trainer.prepare_batch(rollouts, advantages.values))
        losses.append(stats["loss"])
        kls.append(stats["kl"])
    weights = dict(full_weights(trainer.model, trainable_only=False))
    result = {
        "loss": losses, "grad_norm": norms, "kl": kls, "world": accelerator.num_processes,
        "optimizer_steps": len(steps_taken),
        "sharded": type(trainer.model).__name__.startswith("FSDP"),
    }  # fmt: skip
    if accelerator.is_main_process:
        Path(out).mkdir(parents=True, exist_ok=True)
        torch.save(weights, Path(out) / "weights.pt")
        (Path(out) / "stats.json").write_text(json.dumps(result))
    accelerator.wait_for_everyone()
    return {**result, "weights": weights}


def rollout_tokens(trainer, requests, max_tokens: int, seed: int = 7) -> list[list[list[int]]]:
    """Completions of ``requests``, sampled with a fixed seed through the trainer's engine."""
    from invert4tvg.rollout.base import SamplingParams

    sampling = SamplingParams(temperature=1.0, max_tokens=max_tokens, seed=seed)
    return [[c.token_ids for c in group] for group in trainer.engine.generate(requests, sampling)]


def step0_kl(trainer, rollouts) -> float:
    """The largest per-token k3 KL between the policy and its reference before any update."""
    batch = rollouts.batch.to(trainer.accelerator.device)
    with torch.no_grad():
        logps = trainer.policy.completion_logprobs(trainer.model, batch)
        with trainer._ref_context():
            ref = trainer.policy.completion_logprobs(trainer.ref_model or trainer.model, batch)
    kl = torch.exp(ref - logps) - (ref - logps) - 1  # the k3 estimator of grpo/loss.py
    return float((kl * batch.completion_mask).abs().max())


def fsdp_suite(model_dir: str, bench: str, out: str) -> None:
    """Everything tests/test_fsdp.py compares against one unsharded process, in one 2-process launch: 3 updates
    with one and with two micro-batches per process, seeded rollouts, and the step-0 KL under bf16 autocast."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from invert4tvg.training.fsdp import full_weights

    run_steps(model_dir, bench, f"{out}/micro4", 3, 4, fsdp="full_shard")
    run_steps(model_dir, bench, f"{out}/micro2", 3, 2, fsdp="full_shard")
    for name, (model, overrides) in VARIANTS.items():
        run_steps(model_dir, bench, f"{out}/{name}", 3, 4, fsdp="full_shard", model=model, **overrides)
    # A trained (warm-start) adapter: the reference is a frozen copy of it, the "ref" adapter.
    if torch.distributed.get_rank() == 0:
        save_warm_adapter(model_dir, f"{out}/warm_adapter")
    torch.distributed.barrier()
    run_steps(
        f"{out}/warm_adapter", bench, f"{out}/lora-warm", 3, 4, fsdp="full_shard", model=VARIANTS["lora"][0]
    )
    trainer, _, _, requests = setup(model_dir, bench, f"{out}/rollouts", fsdp="full_shard")
    rank = trainer.accelerator.process_index
    # What process 1 holds after loading: it built the model on the meta device and received its shards.
    loaded = {
        "policy": dict(full_weights(trainer.model, trainable_only=False)),
        "reference": dict(full_weights(trainer.ref_model, trainable_only=False)),
        "buffers": {n: b.clone() for n, b in trainer.model.named_buffers()},
        "reference_buffers": {n: b.clone() for n, b in trainer.ref_model.named_buffers()},
    }
    if rank == 1:
        torch.save(loaded, Path(out) / "loaded_1.pt")
    # Unequal lengths: the processes run different numbers of forwards inside one gathered generate call.
    tokens = rollout_tokens(trainer, requests, ROLLOUT_TOKENS[rank])
    (Path(out) / f"rollouts_{rank}.json").write_text(json.dumps(tokens))
    sync = (
        trainer.policy.weights_for_sync()
    )  # what a vLLM / Ray engine receives: whole tensors from the shards
    if rank == 0:
        torch.save(sync, Path(out) / "sync.pt")
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    trainer, rollouts, _, _ = setup(
        model_dir, bench, f"{out}/bf16", accelerator=accelerator, model_dtype="bfloat16", fsdp="full_shard"
    )
    buffers = {n: str(b.dtype) for n, b in trainer.ref_model.named_buffers()}
    policy_buffers = {n: str(b.dtype) for n, b in trainer.policy.model.named_buffers()}
    result = {"kl": step0_kl(trainer, rollouts), "buffers_match": buffers == policy_buffers}
    # LoRA in bf16: the frozen base stored in bf16 and the fp32 adapters in the same FSDP groups.
    trainer, rollouts, advantages, _ = setup(
        model_dir, bench, f"{out}/bf16_lora", accelerator=accelerator, model_dtype="bfloat16",
        model=VARIANTS["lora"][0], fsdp="full_shard",
    )  # fmt: skip
    result["lora_kl"] = step0_kl(trainer, rollouts)
    result["lora_loss"] = trainer.optimise(trainer.prepare_batch(rollouts, advantages.values))["loss"]
    (Path(out) / f"bf16_{rank}.json").write_text(json.dumps(result))
    accelerator.wait_for_everyone()


def run_recipe(argv: list[str], name: str = "grpo_qwen25vl") -> None:
    """``recipes/<name>.py`` with the test reward ``completion_length`` registered (as the tests do)."""
    import importlib.util

    import rewards

    if "completion_length" not in rewards.available():
        rewards.register("completion_length", lambda completions, **_: [len(c) / 100 for c in completions])
    path = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


if __name__ == "__main__":
    if sys.argv[1] == "recipe":
        run_recipe(sys.argv[2:])
    elif sys.argv[1] == "sft":
        run_recipe(sys.argv[2:], "sft_warmstart")
    elif sys.argv[1] == "fsdp":
        parser = argparse.ArgumentParser()
        for flag in ("--model", "--bench", "--out"):
            parser.add_argument(flag, required=True)
        ns = parser.parse_args(sys.argv[2:])
        fsdp_suite(ns.model, ns.bench, ns.out)
    elif sys.argv[1] == "steps":
        parser = argparse.ArgumentParser()
        for flag in ("--model", "--bench", "--out"):
            parser.add_argument(flag, required=True)
        parser.add_argument("--steps", type=int, default=3)
        parser.add_argument("--micro", type=int, default=4)
        parser.add_argument("--fsdp", default="")
        ns = parser.parse_args(sys.argv[2:])
        run_steps(ns.model, ns.bench, ns.out, ns.steps, ns.micro, fsdp=ns.fsdp)
    else:
        parser = argparse.ArgumentParser()
        parser.add_argument("--model", required=True)
        parser.add_argument("--bench", required=True)
        parser.add_argument("--out", required=True)
        parser.add_argument("--loss_type", default="dapo")
        ns = parser.parse_args(sys.argv[2:])
        run(ns.model, ns.bench, ns.out, ns.loss_type)
    # Exiting with gloo's threads alive can abort (training/run.py: finish).
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    sys.exit(0)

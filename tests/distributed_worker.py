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


def completion_lengths(n: int) -> list[int]:
    """The first half of the global batch gets short completions, the second long ones: the token counts of the
    processes differ (what the dapo normaliser must gather)."""
    return [2 + (i % 2) if i < n // 2 else 7 + (i % 3) for i in range(n)]


def run(model_dir: str, bench: str, out: str, loss_type: str = "dapo", accelerator=None) -> dict:
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

    accelerator = accelerator or Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(0)
    policy = load_policy(
        ModelArguments(model_name_or_path=model_dir, freeze_vision_tower=False, lora_dropout=0.0)
    )
    records = load_records("tvg-json", Path(bench) / "train.json", video_dir=Path(bench) / "videos").records
    records = records[:GLOBAL_INSTANCES]
    share = GLOBAL_INSTANCES // world
    mine = records[rank * share : (rank + 1) * share]
    sampler = TaskSampler(p=1.0, seed=0)
    sampling = VideoSampling(min_pixels=3136, total_pixels=200704)
    args = GRPOArguments(
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
        columns={"task": ["tvg"] * len(rewards)},
        truncated=torch.zeros(len(rewards), dtype=torch.bool),
    )
    advantages = compute_advantages(rewards, NUM_GENERATIONS, "group")
    grads: dict[str, torch.Tensor] = {}
    step = trainer.optimizer.step

    def record_then_step(*a, **k):
        for name, p in trainer.accelerator.unwrap_model(trainer.model).named_parameters():
            if p.grad is not None:
                grads[name] = p.grad.detach().clone()
        return step(*a, **k)

    trainer.optimizer.step = record_then_step
    stats = trainer._update(rollouts, advantages.values)
    result = {"loss": stats["loss"], "kl": stats["kl"], "world": world}
    if accelerator.is_main_process:
        Path(out).mkdir(parents=True, exist_ok=True)
        torch.save(grads, Path(out) / "grads.pt")
        (Path(out) / "stats.json").write_text(json.dumps(result))
    accelerator.wait_for_everyone()
    return {**result, "grads": grads}


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
    else:
        parser = argparse.ArgumentParser()
        parser.add_argument("--model", required=True)
        parser.add_argument("--bench", required=True)
        parser.add_argument("--out", required=True)
        parser.add_argument("--loss_type", default="dapo")
        ns = parser.parse_args(sys.argv[2:])
        run(ns.model, ns.bench, ns.out, ns.loss_type)
    sys.exit(0)

"""The memory plan (``invert4tvg plan`` and the check before training) and the launches refused at start.

- parameter counts and per-GPU bytes of Qwen2.5-VL-3B / 7B against values computed by hand from config.json;
- the shipped 3B / 7B configs fit 8x 40 GB as planned, and DDP full fine-tuning does not (the fix it names is FSDP2);
- the update-phase estimate against the tiny model's measured peak on CPU (torch profiler allocation records);
- a run over budget, or launched with DeepSpeed / accelerate's FSDP plugin, stops before any model is loaded.
"""

from __future__ import annotations

import pytest

from invert4tvg.config import DataArguments, GRPOArguments, ModelArguments, TaskArguments, parse_config
from invert4tvg.config_checks import ConfigError
from invert4tvg.training import memory_plan as mp
from invert4tvg.training.launch import LaunchError, check_backend

LORA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CONFIG = {
    "3b": dict(vocab=151936, h=2048, i=11008, layers=36, kv=2 * 128, tied=True),
    "7b": dict(vocab=152064, h=3584, i=18944, layers=28, kv=4 * 128, tied=False),
}


def hand_language_params(c: dict) -> int:
    """Qwen2.5's decoder from config.json: q/k/v with biases, o without, SwiGLU MLP, two RMSNorms per layer."""
    h, kv = c["h"], c["kv"]
    attention = h * h + h + 2 * (h * kv + kv) + h * h
    layer = attention + 3 * h * c["i"] + 2 * h
    embeddings = c["vocab"] * h * (1 if c["tied"] else 2)
    return c["layers"] * layer + embeddings + h  # + the final norm


def hand_lora_params(c: dict, r: int = 64) -> int:
    h, kv, i = c["h"], c["kv"], c["i"]
    per_layer = (h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h)
    return c["layers"] * r * per_layer


@pytest.fixture(scope="module")
def shapes():
    return {size: mp.shapes(f"Qwen/Qwen2.5-VL-{size.upper()}-Instruct", 64, LORA) for size in ("3b", "7b")}


@pytest.mark.parametrize("size", ["3b", "7b"])
def test_parameter_counts_are_the_hand_computed_ones(shapes, size):
    s = shapes[size]
    assert s.language == hand_language_params(CONFIG[size])
    assert s.lora == hand_lora_params(CONFIG[size])
    assert round(s.language / 1e9, 2) == {"3b": 3.09, "7b": 7.62}[size]  # the published language-model sizes


@pytest.mark.parametrize("size", ["3b", "7b"])
def test_per_gpu_terms_are_the_hand_computed_ones(shapes, size):
    s, c = shapes[size], CONFIG[size]
    lang, vision = hand_language_params(c), s.vision
    fsdp = mp.plan(s, mp.Setup(num_processes=8, fsdp=True)).terms
    assert fsdp["weights"] == (4 * lang + 2 * vision) / 8  # fp32 master weights, bf16 frozen vision tower
    assert fsdp["gradients"] == 4 * lang / 8
    assert fsdp["optimizer"] == 8 * lang / 8
    assert fsdp["reference"] == 2 * (lang + vision) / 8
    ddp = mp.plan(s, mp.Setup(num_processes=8)).terms
    assert ddp["optimizer"] == 8 * lang and ddp["gradients"] == 8 * lang  # + DDP's gradient buckets
    assert ddp["reference"] == 4 * lang + 2 * vision  # the policy's dtypes (KL = 0 at step 0)
    lora = mp.plan(s, mp.Setup(num_processes=8, use_peft=True)).terms
    assert lora["optimizer"] == 8 * hand_lora_params(c) and lora["reference"] == 0
    # KV cache of one generate call: 8 sequences of 3584 video + 256 prompt + 1024 completion tokens, bf16 K and V
    kv_cache = 8 * (3584 + 256 + 1024) * c["layers"] * 2 * c["kv"] * 2
    assert ddp["generation"] == kv_cache
    assert fsdp["generation"] == kv_cache + 2 * (lang + vision)  # + the model gathered in bf16 for the call


def shipped(size: str, *overrides: str):
    model, data, _, args = parse_config(
        (ModelArguments, DataArguments, TaskArguments, GRPOArguments),
        ["--config", f"recipes/configs/invert4tvg_qwen25vl_{size}.yaml", *overrides],
    )
    return model, data, args


@pytest.mark.parametrize("size", ["3b", "7b"])
def test_shipped_configs_fit_8_gpus_of_40gb_and_ddp_would_not(shapes, size):
    budget = 40 * mp.GIB
    model, data, args = shipped(size)
    assert args.fsdp == "full_shard" and not model.use_peft  # full fine-tuning, as the paper
    setup = mp.setup_from_config(model, data, args, 8)
    assert setup.video_tokens == 3584 and setup.max_completion_length == 1024  # the paper's budgets
    assert mp.plan(shapes[size], setup, budget).peak <= budget
    assert mp.refusal(shapes[size], setup, budget) is None
    model, data, args = shipped(size, "--fsdp", "")
    message = mp.refusal(shapes[size], mp.setup_from_config(model, data, args, 8), budget)
    assert message is not None and "cheapest fix: fsdp: full_shard" in message


def test_update_phase_estimate_matches_the_tiny_models_measured_peak(tiny_model_dir, tiny_bench, tmp_path):
    """Gradients, checkpointed activations and logits of one update, planned vs the peak of the allocations the
    torch profiler records on CPU (after a first update, so AdamW's moments exist already)."""
    import distributed_worker
    from accelerate import Accelerator
    from torch.profiler import ProfilerActivity, profile

    trainer, rollouts, advantages, _ = distributed_worker.setup(
        str(tiny_model_dir), str(tiny_bench), str(tmp_path), accelerator=Accelerator(cpu=True),
        per_device_train_batch_size=8, gradient_accumulation_steps=1, max_grad_norm=1.0,
    )  # fmt: skip
    trainer.optimise(trainer.prepare_batch(rollouts, advantages.values))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        trainer.optimise(trainer.prepare_batch(rollouts, advantages.values))
    live = measured = 0
    for event in sorted(prof.profiler.kineto_results.events(), key=lambda e: e.start_ns()):
        if event.name() == "[memory]":
            live += event.nbytes()
            measured = max(measured, live)
    batch = rollouts.batch
    width, completion = batch.inputs["input_ids"].shape[1], batch.completion_ids.shape[1]
    video = int(batch.inputs["video_grid_thw"].prod(-1)[0]) // 4
    setup = mp.Setup(
        half_precision=False, freeze_vision_tower=False, video_tokens=video, max_completion_length=completion,
        micro_batch=8, prompt_tokens=width - completion - video,
    )  # fmt: skip
    planned = mp.plan(mp.shapes(str(tiny_model_dir)), setup)
    estimate = sum(planned.terms[k] for k in planned.update)
    assert 0.7 * measured <= estimate <= 1.4 * measured, (estimate, measured)


def test_over_budget_run_is_refused_before_a_model_is_loaded(
    tiny_model_dir, tiny_bench, tmp_path, monkeypatch
):
    from test_grpo_training import recipe_args

    from invert4tvg.workflows.recipe_loader import load_recipe

    recipe = load_recipe("grpo_qwen25vl")

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(recipe, "load_policy", no_loading)
    monkeypatch.setenv(mp.BUDGET_ENV, "0.01")
    args = recipe_args(tiny_bench, tiny_bench / "train.json", tiny_model_dir, tmp_path / "run")
    with pytest.raises(
        ConfigError, match=r"needs about .* GiB per GPU and has 0.01 GiB: the largest term is"
    ):
        recipe.main(args)
    assert not (tmp_path / "run").exists()  # nothing written either


@pytest.mark.parametrize(
    ("variable", "named"),
    [("ACCELERATE_USE_DEEPSPEED", "DeepSpeed is not supported"), ("ACCELERATE_USE_FSDP", "FSDP plugin")],
)
def test_deepspeed_and_accelerates_fsdp_are_refused_in_one_line(monkeypatch, variable, named):
    monkeypatch.setenv(variable, "true")
    with pytest.raises(LaunchError, match=named) as err:
        check_backend()
    message = str(err.value)
    assert "\n" not in message and "recipes/accelerate/fsdp2_8gpu.yaml" in message and "full_shard" in message


def test_deepspeed_launch_stops_the_recipe_before_anything_else(
    tiny_model_dir, tiny_bench, tmp_path, monkeypatch, capsys
):
    from test_grpo_training import recipe_args

    from invert4tvg.training.stops import run_main
    from invert4tvg.workflows.recipe_loader import load_recipe

    recipe = load_recipe("grpo_qwen25vl")
    monkeypatch.setenv(
        "ACCELERATE_USE_DEEPSPEED", "true"
    )  # what accelerate launch sets for a DeepSpeed config
    args = recipe_args(tiny_bench, tiny_bench / "train.json", tiny_model_dir, tmp_path / "run")
    with pytest.raises(SystemExit) as stop:
        run_main(recipe.main, args)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: DeepSpeed is not supported")
    assert not (tmp_path / "run").exists()


def test_plan_command_prints_the_table_and_fails_over_budget(capsys):
    from invert4tvg.cli import main

    config = "recipes/configs/invert4tvg_qwen25vl_7b.yaml"
    assert main(["plan", "--config", config, "--num_processes", "8", "--gpu_memory_gb", "40"]) == 0
    out = capsys.readouterr().out
    for term in (
        "weights",
        "gradients",
        "optimizer",
        "reference",
        "activations",
        "logits",
        "unsharded",
        "generation",
        "vllm",
    ):
        assert f"\n{term} " in out
    assert "FSDP2 full fine-tuning on 8 GPU(s)" in out and "fits in 40 GiB per GPU" in out
    assert (
        main(["plan", "--config", config, "--num_processes", "8", "--gpu_memory_gb", "40", "--fsdp", ""]) == 1
    )
    assert "cheapest fix: fsdp: full_shard" in capsys.readouterr().out

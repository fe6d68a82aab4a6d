"""Checks the configuration gets at parse time, so a bad value fails before a model, a dataset or ``output_dir`` is
touched (and before a failed run leaves ``metadata.json`` or a TensorBoard directory behind)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import rewards
from invert4tvg.errors import UserError, did_you_mean

# tracker -> the module it needs
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb"}


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work; ``field`` names it, so the parser can say where it came from."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def check_training_arguments(args: Any) -> None:
    """Sizes and lengths shared by GRPO and SFT."""
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            raise ConfigError(
                f"{name} must be at least 1, got {getattr(args, name)}: with 0 no step sees a sample and the run "
                "would save an untrained model",
                name,
            )
    if args.max_steps <= 0 and not args.num_train_epochs > 0:
        raise ConfigError(
            f"nothing to train: max_steps is {args.max_steps} (unset) and num_train_epochs is "
            f"{args.num_train_epochs}; set max_steps or a positive num_train_epochs",
            "num_train_epochs",
        )
    if not math.isfinite(args.learning_rate) or args.learning_rate < 0:
        raise ConfigError(
            f"learning_rate must be a finite number >= 0, got {args.learning_rate}", "learning_rate"
        )


def check_report_to(report_to: list[str]) -> None:
    for name in report_to:
        if name not in TRACKERS:
            raise ConfigError(f"report_to: unknown tracker {name!r}; use {', '.join(TRACKERS)} or none")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            extra = " (pip install 'invert4tvg[wandb]')" if name == "wandb" else ""
            raise ConfigError(
                f"report_to {name}: {TRACKERS[name]} is not installed{extra}; install it or remove {name} from "
                "report_to (--report_to none logs to metrics.jsonl only)"
            )


def check_grpo_arguments(args: Any) -> None:
    """Group size and the reward functions (names and weights)."""
    if args.num_generations < 2:
        raise ConfigError(
            f"num_generations must be at least 2, got {args.num_generations}: GRPO scores each completion against "
            "the other completions of its group (advantage = reward - group mean), so a group of "
            f"{max(args.num_generations, 0)} has no baseline: every advantage is 0 (or undefined) and the loss "
            "never moves the model. TRL's GRPO requires 2 or more as well; 8 is the usual value.",
            "num_generations",
        )
    completions = args.per_device_train_batch_size * args.gradient_accumulation_steps
    if completions % args.num_generations:
        prompts = max(completions // args.num_generations, 1)
        raise ConfigError(
            f"per_device_train_batch_size x gradient_accumulation_steps = {completions} completions per device per "
            f"step is not a multiple of num_generations ({args.num_generations}): each device generates whole groups "
            "of G completions of one prompt. per_device_train_batch_size counts completions, as in TRL; for "
            f"{prompts} prompt(s) per device per step set per_device_train_batch_size "
            f"{prompts * args.num_generations} (or a divisor of it, with gradient_accumulation_steps making up the rest)",
            "per_device_train_batch_size",
        )
    check_rewards(args.reward_funcs, args.reward_weights)


# -- ranges and choices of every field (checked by the parser on the merged configuration) ----------------------
# (low, high, low_open, high_open); None: no bound. Fields not listed here get their type checked only.
_AT_LEAST_1 = (1, None, False, False)
_NON_NEGATIVE = (0, None, False, False)
_POSITIVE = (0, None, True, False)
_FRACTION = (0, 1, False, False)
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    # model
    "head_frames": _AT_LEAST_1, "head_loss_ramp_epochs": _NON_NEGATIVE, "head_width": _AT_LEAST_1,
    "head_loss_weights": _NON_NEGATIVE, "lora_r": _AT_LEAST_1, "lora_alpha": _POSITIVE,
    "lora_dropout": (0, 1, False, True),
    # data
    "max_bad_video_fraction": _FRACTION, "video_fps": _POSITIVE, "video_min_frames": _AT_LEAST_1,
    "video_max_frames": _AT_LEAST_1, "video_total_pixels": _AT_LEAST_1, "video_min_pixels": _AT_LEAST_1,
    "video_max_pixels": _AT_LEAST_1, "frame_cache_gb": _POSITIVE,
    # tasks
    "tvg_probability": _FRACTION, "invert_task_weights": _NON_NEGATIVE,
    # optimisation, schedule, logging
    "seed": _NON_NEGATIVE, "learning_rate": _NON_NEGATIVE, "adam_beta1": (0, 1, False, True),
    "adam_beta2": (0, 1, False, True), "adam_epsilon": _NON_NEGATIVE, "weight_decay": _NON_NEGATIVE,
    "max_grad_norm": _NON_NEGATIVE, "warmup_ratio": _FRACTION, "per_device_train_batch_size": _AT_LEAST_1,
    "num_train_epochs": _NON_NEGATIVE, "logging_steps": _NON_NEGATIVE, "save_steps": _NON_NEGATIVE,
    "save_total_limit": _NON_NEGATIVE, "eval_steps": _NON_NEGATIVE, "eval_max_samples": _AT_LEAST_1,
    "gradient_accumulation_steps": _AT_LEAST_1,
    # GRPO
    "num_generations": (2, None, False, False), "max_completion_length": _AT_LEAST_1, "temperature": _POSITIVE,
    "top_p": (0, 1, True, False), "top_k": _NON_NEGATIVE, "beta": _NON_NEGATIVE, "epsilon": _NON_NEGATIVE,
    "epsilon_high": _NON_NEGATIVE, "num_iterations": _AT_LEAST_1, "head_aux_loss_weight": _NON_NEGATIVE,
    "rollout_workers": _AT_LEAST_1, "rollout_batch_sequences": _AT_LEAST_1,
    "vllm_gpu_memory_utilization": (0, 1, True, False), "vllm_tensor_parallel_size": _AT_LEAST_1,
    "vllm_max_model_length": _AT_LEAST_1, "vllm_importance_sampling_clip_max": _POSITIVE,
    "vllm_importance_sampling_clip_min": _NON_NEGATIVE,
    # SFT
    "invert_sft_fraction": _FRACTION, "vision_pretrain_epochs": _NON_NEGATIVE,
    "vision_pretrain_learning_rate": _POSITIVE, "vision_pretrain_batch_size": _AT_LEAST_1,
}  # fmt: skip

# The values a string field takes (each list is checked against its source by tests/test_config_parsing.py).
CHOICES: dict[str, tuple[str, ...]] = {
    "head": ("text_timestamps", "vtimellm", "frame_seg", "loc", "meco"),
    "dtype": ("auto", "bfloat16", "float16", "float32"),
    "dataset_format": ("charades-sta", "tvg-json", "activitynet", "qvhighlights", "time-r1"),
    "on_bad_record": ("raise", "skip"),
    "span_overshoot": ("drop", "clip", "keep"),
    "invert_tasks": ("vc", "ar", "vd"),
    "task_sampling": ("per_iteration", "per_sample"),
    "verb_mask": ("all", "one"),
    "lr_scheduler_type": (
        "constant",
        "linear",
        "cosine",
        "constant_with_warmup",
        "cosine_with_restarts",
        "polynomial",
    ),
    "loss_type": ("grpo", "bnpo", "dr_grpo", "dapo"),
    "scale_rewards": ("group", "batch", "none"),
    "importance_sampling_level": ("token", "sequence"),
    "invert_reward": ("binary", "cosine"),
    "invert_format": ("think_answer", "answer_only"),
    "reward_error_policy": ("raise", "zero"),
    "rollout_backend": ("hf", "ray-hf", "vllm", "ray-vllm"),
    "vllm_importance_sampling_mode": ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"),
    "invert_sft_tasks": ("vc", "ar", "vd"),
    "fsdp": ("", "full_shard"),
}


def _in_range(value: float, rule: tuple[float | None, float | None, bool, bool]) -> bool:
    low, high, low_open, high_open = rule
    if low is not None and (value < low or (low_open and value == low)):
        return False
    return high is None or not (value > high or (high_open and value == high))


def _range_text(rule: tuple[float | None, float | None, bool, bool]) -> str:
    low, high, low_open, high_open = rule
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def check_fields(args: Any) -> None:
    """Every field of one arguments dataclass against :data:`RANGES` and :data:`CHOICES`, and the fields that
    bound each other (min <= max)."""
    import dataclasses

    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if f.name in RANGES:
            rule = RANGES[f.name]
            if any(isinstance(v, int | float) and not _in_range(v, rule) for v in values):
                raise ConfigError(f"{f.name} must be {_range_text(rule)}, got {value}", f.name)
        if f.name in CHOICES:
            bad = [v for v in values if v not in CHOICES[f.name]]
            if bad:
                raise ConfigError(
                    f"{f.name}: {bad[0]!r} is not one of {', '.join(CHOICES[f.name])}"
                    + did_you_mean(str(bad[0]), CHOICES[f.name]),
                    f.name,
                )
    pairs = (("video_min_frames", "video_max_frames"), ("video_min_pixels", "video_max_pixels"))
    for low, high in pairs:
        if hasattr(args, low) and getattr(args, low) > getattr(args, high):
            raise ConfigError(
                f"{low} ({getattr(args, low)}) is larger than {high} ({getattr(args, high)})", low
            )
    weights = getattr(args, "invert_task_weights", None)
    if weights is not None:
        if len(weights) != len(args.invert_tasks):
            raise ConfigError(
                f"invert_task_weights has {len(weights)} entries for {len(args.invert_tasks)} invert_tasks "
                f"({', '.join(args.invert_tasks)}): give one weight per task, in the same order",
                "invert_task_weights",
            )
        if args.invert_tasks and not sum(weights) > 0:
            raise ConfigError("invert_task_weights must not all be 0", "invert_task_weights")


def check_rewards(names: list[str], weights: list[float] | None) -> None:
    if not names:
        raise ConfigError(
            "reward_funcs is empty: name at least one reward (see docs/rewards.md)", "reward_funcs"
        )
    known = set(rewards.available())
    unknown = [n for n in names if n not in known and not rewards.registry.is_path(n)]
    if unknown:
        raise ConfigError(
            f"unknown reward(s) {', '.join(map(repr, unknown))} in reward_funcs; available: "
            f"{', '.join(sorted(known))}. Name a reward of your own by path (module.path:function or "
            "path/to/file.py:function) or install it as a plugin (entry point); docs/rewards.md.",
            "reward_funcs",
        )
    for name in names:
        if rewards.registry.is_path(name):
            try:
                rewards.get(name)  # imports it now: a typo fails at parse time, before anything is loaded
            except KeyError as err:
                raise ConfigError(f"reward_funcs: {err.args[0]}", "reward_funcs") from None
    if weights is not None and len(weights) != len(names):
        raise ConfigError(
            f"reward_weights has {len(weights)} entries for {len(names)} reward_funcs ({', '.join(names)}): give "
            "one weight per reward, in the same order",
            "reward_weights",
        )
    bad = [w for w in (weights or []) if not math.isfinite(float(w))]
    if bad:
        raise ConfigError(f"reward_weights must be finite numbers, got {weights}", "reward_weights")


def looks_local(path: str) -> bool:
    """A model path that cannot be a hub id (``org/name``): a directory that was meant to exist."""
    return path.startswith((".", "/", "~")) or path.count("/") >= 2


def prepare_commands(config_file: str | Path) -> list[str]:
    """The ``# prepare: COMMAND`` header lines of a config: what creates the files it names."""
    lines = Path(config_file).read_text().splitlines()
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith("# prepare:")]


def check_inputs(argv: list[str] | None, model: Any, data: Any, tasks: Any) -> None:
    """Fail before anything is loaded or written when a file or directory the configuration names is missing,
    with one line that says which and, when the config has ``# prepare:`` lines, the commands that create them."""
    named = {"model_name_or_path": model.model_name_or_path}
    named.update({f: getattr(data, f) for f in ("train_annotations", "val_annotations", "test_annotations")})
    named.update({"durations": data.durations, "video_dir": data.video_dir})
    named["prompt_templates"] = tasks.prompt_templates
    missing = [
        f"{field}={value}"
        for field, value in named.items()
        if value
        and not Path(value).expanduser().exists()
        and (field != "model_name_or_path" or looks_local(value))
    ]
    if not missing:
        return
    config = _config_file(argv or [])
    where = f"{config}: " if config else ""
    hint = "fix the paths, or run from the directory they are relative to"
    commands = prepare_commands(config) if config and Path(config).is_file() else []
    if commands:
        hint = "create them with: " + " && ".join(commands)
    raise ConfigError(f"{where}{', '.join(missing)} not found (relative to {Path.cwd()}); {hint}")


def _config_file(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None

"""Checks the configuration gets at parse time, so a bad value fails before a model, a dataset or ``output_dir`` is
touched (and before a failed run leaves ``metadata.json`` or a TensorBoard directory behind)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import rewards

# tracker -> the module it needs
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb"}


class ConfigError(ValueError):
    pass


def check_training_arguments(args: Any) -> None:
    """Sizes and lengths shared by GRPO and SFT."""
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            raise ConfigError(
                f"{name} must be at least 1, got {getattr(args, name)}: with 0 no step sees a sample and the run "
                "would save an untrained model"
            )
    if args.max_steps <= 0 and not args.num_train_epochs > 0:
        raise ConfigError(
            f"nothing to train: max_steps is {args.max_steps} (unset) and num_train_epochs is "
            f"{args.num_train_epochs}; set max_steps or a positive num_train_epochs"
        )
    if not math.isfinite(args.learning_rate) or args.learning_rate < 0:
        raise ConfigError(f"learning_rate must be a finite number >= 0, got {args.learning_rate}")
    for name in ("save_steps", "eval_steps", "logging_steps"):
        if getattr(args, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(args, name)}")
    if args.save_total_limit is not None and args.save_total_limit < 0:
        raise ConfigError(
            f"save_total_limit must be >= 0 (0 or unset keeps all), got {args.save_total_limit}"
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
    """Group size, iterations and the reward functions (names and weights)."""
    if args.num_generations < 2:
        raise ConfigError(
            f"num_generations must be at least 2, got {args.num_generations}: GRPO scores each completion against "
            "the other completions of its group (advantage = reward - group mean), so a group of "
            f"{max(args.num_generations, 0)} has no baseline: every advantage is 0 (or undefined) and the loss "
            "never moves the model. TRL's GRPO requires 2 or more as well; 8 is the usual value."
        )
    completions = args.per_device_train_batch_size * args.gradient_accumulation_steps
    if completions % args.num_generations:
        prompts = max(completions // args.num_generations, 1)
        raise ConfigError(
            f"per_device_train_batch_size x gradient_accumulation_steps = {completions} completions per device per "
            f"step is not a multiple of num_generations ({args.num_generations}): each device generates whole groups "
            "of G completions of one prompt. per_device_train_batch_size counts completions, as in TRL; for "
            f"{prompts} prompt(s) per device per step set per_device_train_batch_size "
            f"{prompts * args.num_generations} (or a divisor of it, with gradient_accumulation_steps making up the rest)"
        )
    if args.num_iterations < 1:
        raise ConfigError(f"num_iterations must be at least 1, got {args.num_iterations}")
    if args.max_completion_length < 1:
        raise ConfigError(f"max_completion_length must be at least 1, got {args.max_completion_length}")
    if args.rollout_workers < 1:
        raise ConfigError(f"rollout_workers must be at least 1, got {args.rollout_workers}")
    check_rewards(args.reward_funcs, args.reward_weights)


def check_rewards(names: list[str], weights: list[float] | None) -> None:
    if not names:
        raise ConfigError("reward_funcs is empty: name at least one reward (see docs/rewards.md)")
    known = set(rewards.available())
    unknown = [n for n in names if n not in known and not rewards.registry.is_path(n)]
    if unknown:
        raise ConfigError(
            f"unknown reward(s) {', '.join(map(repr, unknown))} in reward_funcs; available: "
            f"{', '.join(sorted(known))}. Name a reward of your own by path (module.path:function or "
            "path/to/file.py:function) or install it as a plugin (entry point); docs/rewards.md."
        )
    for name in names:
        if rewards.registry.is_path(name):
            try:
                rewards.get(name)  # imports it now: a typo fails at parse time, before anything is loaded
            except KeyError as err:
                raise ConfigError(f"reward_funcs: {err.args[0]}") from None
    if weights is not None and len(weights) != len(names):
        raise ConfigError(
            f"reward_weights has {len(weights)} entries for {len(names)} reward_funcs ({', '.join(names)}): give "
            "one weight per reward, in the same order"
        )
    bad = [w for w in (weights or []) if not math.isfinite(float(w))]
    if bad:
        raise ConfigError(f"reward_weights must be finite numbers, got {weights}")


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

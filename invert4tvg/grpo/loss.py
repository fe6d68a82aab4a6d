"""GRPO advantages and policy loss, with TRL's names and semantics.

Shapes: ``B`` sequences (prompts x ``num_generations``, the G completions of one prompt consecutive), ``T``
completion positions. ``mask`` is 1 on completion tokens up to and including EOS, 0 after it.

The loss is split in two so that micro-batching is exact: :func:`per_token_loss` works on any slice of the batch,
and :func:`aggregate` divides by a normaliser computed once for the whole batch (:func:`loss_normalizer`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")


@dataclass
class Advantages:
    values: torch.Tensor  # (B,)
    zero_std_groups: int  # groups whose rewards are all equal: they carry no learning signal
    num_groups: int


def compute_advantages(
    rewards: torch.Tensor,
    num_generations: int,
    scale_rewards: str = "group",
    batch_std: torch.Tensor | None = None,
) -> Advantages:
    """Group-relative advantages: reward minus its group mean, divided by a std (group, batch or none).

    ``batch_std`` lets a distributed caller pass the std of the *global* batch for ``scale_rewards="batch"``.
    Rewards that are NaN (unscorable completions) are left out of the group statistics and get advantage 0.
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
    if rewards.numel() % num_generations:
        raise ValueError(f"{rewards.numel()} rewards cannot be split into groups of {num_generations}")
    grouped = rewards.view(-1, num_generations)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    group_std = _nanstd(grouped, dim=1, keepdim=True)
    advantages = grouped - mean
    if scale_rewards == "group":
        advantages = advantages / (group_std + 1e-4)
    elif scale_rewards == "batch":
        std = batch_std if batch_std is not None else _nanstd(rewards.view(-1), dim=0)
        advantages = advantages / (std + 1e-4)
    zero_std = torch.isclose(group_std, torch.zeros_like(group_std)) | torch.isnan(group_std)
    return Advantages(
        values=torch.nan_to_num(advantages.reshape(-1), nan=0.0),
        zero_std_groups=int(zero_std.sum()),
        num_groups=grouped.shape[0],
    )


def _nanstd(x: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    """Unbiased std ignoring NaNs (TRL's ``nanstd``)."""
    valid = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    var = torch.nansum((x - mean) ** 2, dim=dim, keepdim=True) / (valid - 1).clamp(min=1)
    std = var.sqrt()
    return std if keepdim else std.squeeze(dim)


@dataclass
class LossConfig:
    loss_type: str = "dapo"
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float | None = None
    importance_sampling_level: str = "token"
    max_completion_length: int = 256
    # TRL's default: weight the k3 KL by the importance ratio, which makes its gradient the unbiased reverse-KL
    # gradient (the ratio is differentiable, so this matters even on-policy). The public TVG code predates it.
    use_bias_correction_kl: bool = True

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
            raise ValueError(
                f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, "
                f"got {self.importance_sampling_level!r}"
            )

    @property
    def epsilon_low(self) -> float:
        return self.epsilon

    @property
    def epsilon_up(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


def per_token_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: LossConfig,
    ref_logps: torch.Tensor | None = None,
    sampling_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate (+ k3 KL to the reference when ``beta > 0``) per completion token.

    ``sampling_weights`` (TRL's vLLM importance-sampling ratio, ``grpo/sampling_correction.py``) multiply the
    surrogate, not the KL, as in TRL. Returns the (B, T) loss and per-token statistics (``kl``, ``clipped``, ``clipped_low``, ``clipped_high``).
    """
    log_ratio = logps - old_logps
    if config.importance_sampling_level == "sequence":
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    ratio = torch.exp(log_ratio)
    clipped_ratio = torch.clamp(ratio, 1 - config.epsilon_low, 1 + config.epsilon_up)
    adv = advantages.unsqueeze(-1)
    loss = -torch.min(ratio * adv, clipped_ratio * adv)
    # TRL's clip_ratio/*: tokens whose ratio the clip stopped, below (negative advantage) or above (positive).
    low = ((ratio < 1 - config.epsilon_low) & (adv < 0)).float().expand_as(logps)
    high = ((ratio > 1 + config.epsilon_up) & (adv > 0)).float().expand_as(logps)
    stats = {"clipped_low": low, "clipped_high": high, "clipped": torch.maximum(low, high)}
    if sampling_weights is not None:
        loss = loss * sampling_weights
    if config.beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs the reference model's log-probabilities")
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1  # k3 estimator, unbiased and non-negative
        stats["kl"] = kl.detach()
        if config.use_bias_correction_kl:
            kl = kl * ratio
        loss = loss + config.beta * kl
    return loss.expand_as(logps), stats


def loss_normalizer(
    mask: torch.Tensor,
    config: LossConfig,
    num_processes: int = 1,
    global_tokens: torch.Tensor | float | None = None,
) -> torch.Tensor | float:
    """What the summed per-token loss of the *whole* batch is divided by, per ``loss_type``.

    ``grpo`` averages each sequence over its own tokens and then over sequences, so its weights are per sequence:
    the returned tensor (B,) holds each sequence's token count times the number of sequences.

    ``dapo`` divides by the completion tokens of the global batch, summed over all ``num_processes`` processes
    (``global_tokens``; by default this process's ``mask`` is the whole batch). As in TRL it is divided by the
    number of processes because DDP averages the gradients of the processes: the result is the global token mean.
    """
    num_sequences = mask.shape[0]
    if config.loss_type == "grpo":
        return mask.sum(-1).clamp(min=1.0) * num_sequences
    if config.loss_type == "bnpo":
        return mask.sum().clamp(min=1.0)
    if config.loss_type == "dr_grpo":
        return float(num_sequences * config.max_completion_length)
    tokens = mask.sum() if global_tokens is None else torch.as_tensor(global_tokens, dtype=mask.dtype)
    return tokens.clamp(min=1.0) / num_processes


def aggregate(
    loss: torch.Tensor, mask: torch.Tensor, normalizer: torch.Tensor | float, config: LossConfig
) -> torch.Tensor:
    """Sum a (micro-)batch's masked per-token loss divided by the whole batch's normaliser."""
    masked = loss * mask
    if config.loss_type == "grpo":
        return (masked.sum(-1) / normalizer).sum()
    return masked.sum() / normalizer


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: LossConfig,
    ref_logps: torch.Tensor | None = None,
) -> torch.Tensor:
    """The whole-batch loss in one call (micro-batching callers use the three parts above)."""
    loss, _ = per_token_loss(logps, old_logps, advantages, mask, config, ref_logps)
    return aggregate(loss, mask, loss_normalizer(mask, config), config)

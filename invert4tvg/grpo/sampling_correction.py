"""Rollout-engine vs trainer log-probabilities: the gap, logged every step, and TRL's importance-sampling correction.

An engine with its own model copy (vLLM: other kernels, bf16; a Ray worker; a policy version behind) samples from a
distribution slightly different from the trainer's. Completions carry the engine's per-token log-probabilities
(``Completion.logprobs``); the trainer's at rollout time are the "old" log-probabilities of the loss. TRL 1.16's
correction (``vllm_importance_sampling_correction``, same names and modes here) weights each token's policy loss by
``exp(trainer - engine)``, truncated to ``[clip_min, clip_max]`` (``*_truncate``) or zeroed outside it
(``*_mask``), per token or once per sequence (sum of the token differences). The logged metrics keep TRL's names:
``sampling/sampling_logp_difference/{mean,max}`` and ``sampling/importance_sampling_ratio/{min,mean,max}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from invert4tvg.rollout.base import Completion

MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def engine_logprobs(completions: Sequence[Sequence[Completion]], width: int) -> torch.Tensor:
    """The engine's per-token log-probabilities as a (B, width) tensor (rows in batch order, NaN where missing)."""
    flat = [c for group in completions for c in group]
    out = torch.full((len(flat), width), math.nan)
    for row, completion in enumerate(flat):
        values = completion.logprobs[:width]
        if values:
            out[row, : len(values)] = torch.tensor(values, dtype=torch.float32)
    return out


def importance_weights(
    trainer_logps: torch.Tensor,
    engine_logps: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token_truncate",
    clip_min: float | None = None,
    clip_max: float | None = 3.0,
) -> torch.Tensor:
    """Per-token weights ``(B, T)`` (``(B, 1)`` in sequence modes) for the policy loss, TRL's semantics: tokens the
    engine could not score (NaN) count as no difference."""
    if mode not in MODES:
        raise ValueError(f"vllm_importance_sampling_mode must be one of {MODES}, got {mode!r}")
    diff = torch.nan_to_num((trainer_logps.detach() - engine_logps) * mask, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True)
    ratio = torch.exp(diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    low = -math.inf if clip_min is None else clip_min
    high = math.inf if clip_max is None else clip_max
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)


class SamplingCorrection:
    """One step's engine log-probabilities; gives each micro-batch its weights and collects the step's metrics."""

    def __init__(
        self,
        completions: Sequence[Sequence[Completion]],
        width: int,
        device: torch.device | str,
        apply: bool,
        mode: str = "token_truncate",
        clip_min: float | None = None,
        clip_max: float | None = 3.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"vllm_importance_sampling_mode must be one of {MODES}, got {mode!r}")
        self.engine = engine_logprobs(completions, width).to(device)
        self.apply = apply
        self.mode, self.clip_min, self.clip_max = mode, clip_min, clip_max
        self._seen: set[int] = set()
        self._gap_sum = 0.0
        self._gap_count = 0
        self._gap_max = 0.0
        self._ratios: list[torch.Tensor] = []

    def weights(
        self, rows: Sequence[int], trainer_logps: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor | None:
        """The weights of micro-batch ``rows`` (None when the correction is off); the first time rows are seen,
        their gap is recorded for the step's metrics."""
        engine = self.engine[list(rows)]
        ratio = importance_weights(trainer_logps, engine, mask, self.mode, self.clip_min, self.clip_max)
        fresh = [i for i, row in enumerate(rows) if row not in self._seen]
        if fresh:
            self._seen.update(rows[i] for i in fresh)
            valid = mask[fresh].bool() & ~torch.isnan(engine[fresh])
            gap = (trainer_logps.detach()[fresh] - engine[fresh]).abs()[valid]
            if gap.numel():
                self._gap_sum += float(gap.sum())
                self._gap_count += gap.numel()
                self._gap_max = max(self._gap_max, float(gap.max()))
            flat = (
                ratio[fresh].flatten()
                if self.mode.startswith("sequence")
                else ratio[fresh][mask[fresh].bool()]
            )
            self._ratios.append(flat.detach().float().cpu())
        return ratio if self.apply else None

    def metrics(self) -> dict[str, float]:
        ratios = torch.cat(self._ratios) if self._ratios else torch.zeros(0)
        out = {
            "sampling/sampling_logp_difference/mean": self._gap_sum / max(self._gap_count, 1),
            "sampling/sampling_logp_difference/max": self._gap_max,
        }
        if ratios.numel():
            out.update(
                {
                    "sampling/importance_sampling_ratio/min": float(ratios.min()),
                    "sampling/importance_sampling_ratio/mean": float(ratios.mean()),
                    "sampling/importance_sampling_ratio/max": float(ratios.max()),
                }
            )
        return out

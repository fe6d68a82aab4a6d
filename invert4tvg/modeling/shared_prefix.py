"""Shared-prefix layout: each GRPO group as one sequence, the prompt (and its video) once, then its G completions.

The idea of "Prefix Grouper" (arXiv 2506.05433). In the repeated layout every completion row carries its own copy of
the prompt, so the vision tower and the prompt tokens run G times per pass. Here a group's row is

    [prompt (left-padded to P)] [completion 1 (T)] ... [completion G (T)]

with a 4-D attention mask in which a completion token sees the prompt's real tokens and the earlier tokens of its own
completion only, and Qwen2.5-VL's 3-D mrope position ids that continue from the prompt for every completion (a
completion token gets the position it has in the repeated layout). Each completion token's hidden state is therefore
the same function of the weights as in the repeated layout, and so are its log-prob and its gradient.

The mask is an explicit (rows, 1, L, L) boolean tensor for SDPA (or an additive float mask for eager attention):
quadratic in the packed length, like the attention scores of the math kernel; flash attention cannot take it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import BatchFeature

from invert4tvg.modeling.positions import mrope_positions
from invert4tvg.modeling.processing import select_inputs
from invert4tvg.modeling.sequences import SequenceBatch

MASKABLE_ATTENTION = ("sdpa", "eager")


@dataclass
class SharedPrefixBatch:
    """The groups of a :class:`SequenceBatch`, one row each; rows of ``completion_ids`` are still completions."""

    prompt_inputs: BatchFeature  # one row per group: left-padded prompt ids, its 2-D mask, the video tensors
    position_ids: torch.Tensor  # (3, groups, P + G * T)
    completion_ids: torch.Tensor  # (B, T), B = groups * G
    completion_mask: torch.Tensor  # (B, T)
    num_generations: int
    mask_dtype: torch.dtype | None = None  # None: boolean mask (SDPA); a float dtype: additive mask (eager)
    constraints: list | None = None  # per completion row: the TokenConstraint it was sampled under, or None

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def prompt_length(self) -> int:
        return self.prompt_inputs["input_ids"].shape[1]

    def logit_positions(self) -> torch.Tensor:
        """Per completion block: the last prompt token, then all but the block's last token."""
        prompt, width = self.prompt_length, self.completion_ids.shape[1]
        starts = prompt + width * torch.arange(self.num_generations)
        inner = (starts[:, None] + torch.arange(width - 1)[None, :]).reshape(self.num_generations, width - 1)
        first = torch.full((self.num_generations, 1), prompt - 1)
        return torch.cat([first, inner], dim=1).reshape(-1)

    @property
    def inputs(self) -> BatchFeature:
        """Model inputs: packed ids, the 4-D mask (built here, not stored: it is the big tensor) and positions."""
        groups, width = self.prompt_inputs["input_ids"].shape[0], self.completion_ids.shape[1]
        packed = self.completion_ids.reshape(groups, self.num_generations * width)
        inputs = dict(self.prompt_inputs)
        inputs["input_ids"] = torch.cat([self.prompt_inputs["input_ids"], packed], dim=1)
        if "mm_token_type_ids" in inputs:  # completions are text (type 0)
            inputs["mm_token_type_ids"] = torch.cat(
                [
                    inputs["mm_token_type_ids"],
                    torch.zeros_like(packed, dtype=inputs["mm_token_type_ids"].dtype),
                ],
                1,
            )
        inputs["attention_mask"] = self._attention_mask()
        inputs["position_ids"] = self.position_ids
        return BatchFeature(inputs)

    def _attention_mask(self) -> torch.Tensor:
        prompt_mask = self.prompt_inputs["attention_mask"]
        groups, prompt = prompt_mask.shape
        width = self.completion_ids.shape[1]
        device = prompt_mask.device
        block = torch.cat(
            [
                torch.full((prompt,), -1, device=device),
                torch.arange(self.num_generations, device=device).repeat_interleave(width),
            ]
        )
        index = torch.arange(block.numel(), device=device)
        causal = index[None, :] <= index[:, None]  # [query, key]
        same_block = (block[None, :] == -1) | (block[None, :] == block[:, None])
        key_valid = torch.cat([prompt_mask, self.completion_mask.reshape(groups, -1)], dim=1).bool()
        allowed = (causal & same_block)[None] & key_valid[:, None, :]
        # Padding queries (left pads, tokens after EOS) attend to themselves: no fully masked row, no NaN.
        allowed |= torch.eye(block.numel(), dtype=torch.bool, device=device)
        allowed = allowed[:, None]
        if self.mask_dtype is None:
            return allowed
        return torch.zeros(allowed.shape, dtype=self.mask_dtype, device=device).masked_fill(
            ~allowed, torch.finfo(self.mask_dtype).min
        )

    def select(self, rows: Sequence[int]) -> SharedPrefixBatch:
        """Completion rows ``rows``, which must be whole groups in order."""
        rows = list(rows)
        g = self.num_generations
        groups = rows[::g]
        if any(r % g for r in groups) or rows != [k + i for k in groups for i in range(g)]:
            raise ValueError(f"a shared-prefix batch selects whole groups of {g} rows, got {rows}")
        groups = [r // g for r in groups]
        return SharedPrefixBatch(
            select_inputs(self.prompt_inputs, groups),
            self.position_ids[:, groups],
            self.completion_ids[rows],
            self.completion_mask[rows],
            g,
            self.mask_dtype,
            None if self.constraints is None else [self.constraints[i] for i in rows],
        )

    def to(self, device: torch.device | str) -> SharedPrefixBatch:
        return SharedPrefixBatch(
            self.prompt_inputs.to(device),
            self.position_ids.to(device),
            self.completion_ids.to(device),
            self.completion_mask.to(device),
            self.num_generations,
            self.mask_dtype,
            self.constraints,
        )


def pack_groups(batch: SequenceBatch, num_generations: int, model: torch.nn.Module) -> SharedPrefixBatch:
    """Regroup a repeated-layout batch (the G rows of a group consecutive, same prompt) into the shared layout.
    ``model`` supplies the mrope configuration and the attention implementation (the mask's form)."""
    inner = getattr(model, "module", model)  # DDP
    attention = check_attention(inner)
    if len(batch) % num_generations:
        raise ValueError(f"{len(batch)} rows cannot be split into groups of {num_generations}")
    width = batch.completion_ids.shape[1]
    prompt_length = batch.inputs["input_ids"].shape[1] - width
    prompts = dict(select_inputs(batch.inputs, range(0, len(batch), num_generations)))
    prompts["input_ids"] = prompts["input_ids"][:, :prompt_length]
    prompts["attention_mask"] = prompts["attention_mask"][:, :prompt_length]
    if "mm_token_type_ids" in prompts:
        prompts["mm_token_type_ids"] = prompts["mm_token_type_ids"][:, :prompt_length]
    prompts = BatchFeature(prompts)
    prompt_positions = mrope_positions(inner, prompts)
    # Completion tokens are text after the prompt's last (text) token: every one of the three mrope components
    # continues from it, exactly as in the repeated row.
    after = prompt_positions[:, :, -1:] + 1 + torch.arange(width, device=prompt_positions.device)
    position_ids = torch.cat([prompt_positions] + [after] * num_generations, dim=2)
    mask_dtype = None if attention == "sdpa" else next(inner.parameters()).dtype
    return SharedPrefixBatch(
        prompts,
        position_ids,
        batch.completion_ids,
        batch.completion_mask,
        num_generations,
        mask_dtype,
        batch.constraints,
    )


def check_attention(model: torch.nn.Module) -> str:
    """The model's attention implementation, if it takes the shared-prefix mask; a ValueError otherwise."""
    attention = getattr(model.config, "_attn_implementation", "sdpa") or "sdpa"
    if attention not in MASKABLE_ATTENTION:
        raise ValueError(
            f"shared_prefix needs an attention implementation that takes a 4-D mask ({MASKABLE_ATTENTION}), the "
            f"model uses {attention!r}: set attn_implementation: sdpa, or shared_prefix: false"
        )
    return attention


def micro_batches(num_rows: int, size: int, group: int = 1) -> list[list[int]]:
    """Row index lists of at most ``size`` rows (at least one whole ``group``), never splitting a group."""
    step = max(group, size // group * group)
    return [list(range(i, min(i + step, num_rows))) for i in range(0, num_rows, step)]

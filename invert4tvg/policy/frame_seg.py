"""The frame-segmentation head (seed 004): the answer is one '0'/'1' character per part of the video.

The video is cut into ``frames`` equal windows (the paper: 25, each represented by its middle frame); the completion
is exactly that many characters, '1' where the event is, then EOS. Per window, the foreground probability is the
softmax over the logits of '0' and '1' at its answer position; a moment is a run of '1' ->
``[i * d / f, (j + 1) * d / f]``; the span of a completion is its first moment (the reward and the metrics score
one span per query). Rollouts are constrained to that shape (:class:`TokenConstraint`), and the trainer scores them
under the same constraint, so the policy GRPO trains is the constrained one.

Frames and Qwen2.5-VL's temporal merging: the model sees the frames the data configuration samples (fps 2 by
default), two per temporal patch, and reads their time from the temporal position ids. The characters label time
windows, not frames, so the merge never pairs two labels into one token: a window spans ``d / f`` seconds, i.e.
``d / f * fps / 2`` temporal patches (0.6 for a 30 s video at fps 2 and f = 25: a patch can straddle two windows,
as a frame straddles nothing). The label of a window is whether its middle lies in the ground truth, as the
paper's middle frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import BatchFeature

from invert4tvg.modeling.logprobs import TokenConstraint
from invert4tvg.modeling.processing import eos_token_ids
from invert4tvg.policy import segmentation_loss as seg
from invert4tvg.policy.base import CompletionPolicy, Decoded, SupervisedExample
from invert4tvg.rollout.base import Completion
from rewards import window_labels

DEFAULT_FRAMES = 25  # [paper]
DEFAULT_RAMP_EPOCHS = 6.0  # [paper] the loss weights reach their final values after 6 epochs


def single_token_id(tokenizer, char: str) -> int:
    """The id of ``char`` when the tokenizer writes it, alone and in a run of its kind, as one token per character."""
    alone = tokenizer(char, add_special_tokens=False)["input_ids"]
    run = tokenizer(char * 8, add_special_tokens=False)["input_ids"]
    if len(alone) != 1 or run != alone * 8:
        raise ValueError(
            f"the frame_seg head needs {char!r} to be one token, also in a run ({char * 8!r} -> {run}); this "
            "tokenizer merges them. Use a tokenizer that splits digits (Qwen2's does) or another head."
        )
    return alone[0]


def moments(mask: str, duration: float) -> list[tuple[float, float]]:
    """The runs of '1' in ``mask`` as spans in seconds."""
    width = duration / len(mask)
    spans, start = [], None
    for i, char in enumerate(mask + "0"):
        if char == "1" and start is None:
            start = i
        elif char != "1" and start is not None:
            spans.append((start * width, i * width))
            start = None
    return spans


class FrameSegPolicy(CompletionPolicy):
    """Exactly ``frames`` characters of '0'/'1'; SFT loss = LM + weighted BCE + Tversky + generalised Dice."""

    name = "frame_seg"

    def __init__(
        self,
        model: torch.nn.Module,
        processor,
        frames: int = DEFAULT_FRAMES,
        ramp_epochs: float = DEFAULT_RAMP_EPOCHS,
    ) -> None:
        super().__init__(model, processor)
        if frames < 1:
            raise ValueError(f"head_frames must be at least 1, got {frames}")
        self.frames = frames
        self.ramp_epochs = ramp_epochs
        tokenizer = processor.tokenizer
        self.zero, self.one = single_token_id(tokenizer, "0"), single_token_id(tokenizer, "1")
        self._constraint = TokenConstraint(
            (self.zero, self.one), frames, tuple(eos_token_ids(model, tokenizer))
        )
        self.answer_instruction = (
            f"Cut the video into {frames} equal parts and answer with exactly {frames} characters, one per part: "
            "1 where the event happens, 0 elsewhere."
        )

    @classmethod
    def from_options(cls, model, processor, options: dict[str, Any]) -> FrameSegPolicy:
        return cls(
            model,
            processor,
            frames=int(options.get("frames") or DEFAULT_FRAMES),
            ramp_epochs=float(
                DEFAULT_RAMP_EPOCHS if options.get("ramp_epochs") is None else options["ramp_epochs"]
            ),
        )

    def head_config(self) -> dict[str, Any]:
        return {"head": self.name, "frames": self.frames, "ramp_epochs": self.ramp_epochs}

    def constraint(self, task: str) -> TokenConstraint | None:
        return self._constraint if task == "tvg" else None  # inversion prompts are answered in text

    def tvg_target(self, query: str, start: float, end: float, duration: float) -> str:
        return "".join(map(str, window_labels(start, end, duration, self.frames)))

    def decode(self, completion: Completion | str, duration: float) -> Decoded | None:
        """The first moment (None when the answer is not ``frames`` characters of '0'/'1' or has no '1'), and the
        foreground probability per window when ``completion`` carries the engine's log-probs of its characters
        (the two-token softmax, as the rollout engines record log-probs under the constraint)."""
        text = completion if isinstance(completion, str) else completion.text
        mask = text.strip()
        if len(mask) != self.frames or set(mask) - {"0", "1"}:
            return None
        found = moments(mask, duration)
        if not found:
            return None
        saliency = None
        if isinstance(completion, Completion) and len(completion.logprobs) >= self.frames:
            chosen = torch.tensor(completion.logprobs[: self.frames]).exp()
            ones = torch.tensor([c == "1" for c in mask])
            saliency = torch.where(ones, chosen, 1 - chosen).tolist()
        return Decoded(found[0], saliency, [int(c) for c in mask])

    def supervised_loss(
        self,
        model: torch.nn.Module,
        inputs: BatchFeature,
        labels: torch.Tensor,
        epoch: float = 0.0,
        examples: Sequence[SupervisedExample] = (),
    ) -> tuple[torch.Tensor, dict[str, float]]:
        outputs = model(**inputs, labels=labels, use_cache=False)
        targets = labels[:, 1:]
        answer = (targets == self.zero) | (targets == self.one)
        # Mask rows only: an inversion-task (text) target may contain the digits too. A mask row's labels are
        # its ``frames`` characters and the EOS.
        is_mask = (answer.sum(1) == self.frames) & ((targets != -100).sum(1) == self.frames + 1)
        answer &= is_mask[:, None]
        weights = seg.ramp_weights(epoch, self.ramp_epochs)
        if not answer.any():  # only inversion-task (text) examples: the LM term, weighted as in any batch
            return weights[0] * outputs.loss, {"loss/lm": outputs.loss.item()}
        logits = outputs.logits[:, :-1][answer].float()
        foreground = logits[:, self.one] - logits[:, self.zero]  # sigmoid = softmax over ('0', '1')
        truth = (targets[answer] == self.one).float()
        row = answer.nonzero()[:, 0]
        row = torch.unique(row, return_inverse=True)[1]
        parts = {
            "lm": outputs.loss,
            "bce": seg.weighted_bce(foreground, truth),
            "tversky": seg.tversky_loss(foreground, truth, row),
            "dice": seg.generalised_dice_loss(foreground, truth, row),
        }
        loss = sum(w * part for w, part in zip(weights, parts.values()))
        return loss, {f"loss/{k}": v.item() for k, v in parts.items()}

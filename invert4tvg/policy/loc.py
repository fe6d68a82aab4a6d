"""VideoExpert's ``<LOC>`` head (seed 001): a location token whose hidden state drives a temporal head.

The answer is the text "During <LOC>." The last layer's hidden state at ``<LOC>`` goes through an MLP and is added to
every frame feature (the last layer's video-token states, mean-pooled per temporal patch: Qwen2.5-VL has no
per-frame token); three 1-D convolutions (kernel 3) then give each frame a foreground logit and (left, right)
offsets, fractions of the video. The span is the most confident frame's centre minus / plus its offsets, clipped
to the video.

SFT loss = text NLL + ``w_bce`` BCE over frames (background frames weighted 0.1) + ``w_l1`` smooth-L1 on the offsets
+ ``w_giou`` (1 - GIoU) of each frame's span, the last two on foreground frames; weights (2, 5, 2) as in
VideoExpert's code. In GRPO the reward reads the head's span while the policy gradient reaches only text tokens; the
head's loss stays on as an auxiliary term (``head_aux_loss_weight``, docs/heads.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from invert4tvg.policy.base import Decoded
from invert4tvg.policy.hidden import HiddenStatePolicy, frame_centres, frame_labels

LOC = "<LOC>"
BACKGROUND_WEIGHT = 0.1  # [VideoExpert code] BCE weight of frames outside the span


class TemporalHead(torch.nn.Module):
    """``<LOC>`` state -> MLP, added to the frame features; three k=3 convolutions -> (logit, left, right)."""

    def __init__(self, hidden_size: int, width: int) -> None:
        super().__init__()
        self.query = torch.nn.Sequential(
            torch.nn.Linear(hidden_size, hidden_size),
            torch.nn.GELU(),
            torch.nn.Linear(hidden_size, hidden_size),
        )
        self.convs = torch.nn.Sequential(
            torch.nn.Conv1d(hidden_size, width, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv1d(width, width, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv1d(width, 3, 3, padding=1),
        )

    def forward(self, frames: torch.Tensor, loc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F, H) frame features and the (H,) ``<LOC>`` state -> (F,) foreground logits, (F, 2) offsets in [0, 1]."""
        x = frames + self.query(loc)
        out = self.convs(x.T.unsqueeze(0)).squeeze(0).T
        return out[:, 0], out[:, 1:].sigmoid()


def frame_spans(offsets: torch.Tensor) -> torch.Tensor:
    """(F, 2) (left, right) offsets -> (F, 2) spans as fractions of the video, clipped to [0, 1]."""
    centres = frame_centres(len(offsets)).to(offsets.device)
    return torch.stack([centres - offsets[:, 0], centres + offsets[:, 1]], dim=-1).clamp(0.0, 1.0)


def decode_frames(logits: torch.Tensor, offsets: torch.Tensor, duration: float) -> Decoded:
    """The span of the most confident frame (its centre -/+ its offsets, in seconds), every frame's foreground
    probability and 0/1 decision (probability above 0.5)."""
    best = int(logits.argmax())
    start, end = (frame_spans(offsets)[best] * duration).tolist()
    probability = logits.sigmoid()
    return Decoded((start, end), probability.tolist(), (probability > 0.5).int().tolist())


def target_offsets(frames: int, start: float, end: float, duration: float) -> torch.Tensor:
    """(F, 2): each frame centre's distance to the span's start and end, as fractions of the video (clipped to
    [0, 1]; meaningful for frames inside the span, the only ones the offset losses read)."""
    centres = frame_centres(frames)
    return torch.stack([centres - start / duration, end / duration - centres], dim=-1).clamp(0, 1)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - generalised IoU of 1-D spans (N, 2) against (2,)."""
    inter = (torch.minimum(pred[:, 1], target[1]) - torch.maximum(pred[:, 0], target[0])).clamp(min=0)
    union = (pred[:, 1] - pred[:, 0]) + (target[1] - target[0]) - inter
    hull = torch.maximum(pred[:, 1], target[1]) - torch.minimum(pred[:, 0], target[0])
    iou = inter / union.clamp(min=1e-6)
    return 1 - (iou - (hull - union) / hull.clamp(min=1e-6))


class LocPolicy(HiddenStatePolicy):
    """Answers "During <LOC>."; the span comes from the temporal head on the ``<LOC>`` state and the frames."""

    name = "loc"
    extra_special_tokens = (LOC,)
    token_layer = -1
    loss_parts = ("bce", "l1", "giou")
    default_loss_weights = (2.0, 5.0, 2.0)  # [VideoExpert code]
    answer_instruction = f"Answer with the location token, exactly: During {LOC}."

    def build_module(self, hidden_size: int, width: int) -> TemporalHead:
        return TemporalHead(hidden_size, width)

    def tvg_target(self, query: str, start: float, end: float, duration: float) -> str:
        return f"During {LOC}."

    def _loc(self, tokens: torch.Tensor) -> torch.Tensor | None:
        return tokens[0] if len(tokens) else None  # the first <LOC> of the answer

    def head_losses(self, frames, tokens, token_ids, span, duration):
        loc = self._loc(tokens)
        if loc is None:
            return None
        logits, offsets = self.module(frames, loc)
        foreground = frame_labels(len(frames), *span, duration).to(frames.device)
        truth = torch.tensor([span[0] / duration, span[1] / duration], device=frames.device).clamp(0, 1)
        weight = torch.where(foreground, 1.0, BACKGROUND_WEIGHT)
        bce = (
            F.binary_cross_entropy_with_logits(logits, foreground.float(), reduction="none") * weight
        ).sum()
        targets = target_offsets(len(frames), *span, duration).to(frames.device)
        return {
            "bce": bce / weight.sum(),
            "l1": F.smooth_l1_loss(offsets[foreground], targets[foreground]),
            "giou": giou_loss(frame_spans(offsets)[foreground], truth).mean(),
        }

    def read_span(self, frames, tokens, token_ids, duration) -> Decoded | None:
        loc = self._loc(tokens)
        if loc is None:
            return None
        return decode_frames(*self.module(frames, loc), duration)

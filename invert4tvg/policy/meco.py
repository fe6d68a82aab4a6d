"""MeCo's structural tokens (seed 000): the answer partitions the video into events and transitions.

The answer covers the video in time order with one structural token per segment: ``<ent>`` for the queried event,
preceded by a query-focused caption, and ``<tst>`` for a transition (background) before or after it. A transition
is written only where one exists: none when the event starts at the video's start or ends at its end, so the token
sequence itself carries the structure (the paper's Fig. 3). Caption: the grounding datasets have none beyond the
query, so the query is the caption (the synthetic benchmark's query describes exactly the event).

Two 2-layer MLPs project the structural tokens' states (the second-to-last layer) and the frame features (the last
layer, mean-pooled per temporal patch) into one space; p(frame t | token i) is a softmax over frames of
cos(s_i, h_t) / tau with tau learnable (CLIP's initial 0.07). SFT loss = LM + L_ST, L_ST = -1/(M+K) sum_i
1/|seg_i| sum_{t in seg_i} log p(h_t | s_i). Decoding assigns each frame to its arg-max token; the longest run of
frames assigned to the first ``<ent>`` is the span.
"""

from __future__ import annotations

import math

import torch

from invert4tvg.policy.base import Decoded
from invert4tvg.policy.hidden import DEFAULT_WIDTH, HiddenStatePolicy, frame_labels

EVENT, TRANSITION = "<ent>", "<tst>"
CLIP_TEMPERATURE = 0.07  # [paper: CLIP's initialisation]


def _projector(hidden_size: int, width: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(hidden_size, hidden_size), torch.nn.GELU(), torch.nn.Linear(hidden_size, width)
    )


class StructuralGrounding(torch.nn.Module):
    """Projects structural tokens and frames into one space; log p(frame t | token i), a softmax over frames."""

    def __init__(self, hidden_size: int, width: int) -> None:
        super().__init__()
        self.tokens = _projector(hidden_size, width)
        self.frames = _projector(hidden_size, width)
        # Shape (1,), not a scalar: FSDP2 cannot shard a 0-d parameter. A file saved with the scalar still loads.
        self.log_inverse_tau = torch.nn.Parameter(torch.tensor([math.log(1 / CLIP_TEMPERATURE)]))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        key = prefix + "log_inverse_tau"
        if key in state_dict and state_dict[key].dim() == 0:
            state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, frames: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(F, H) frames, (K, H) structural tokens -> (K, F) log p(h_t | s_i)."""
        s = torch.nn.functional.normalize(self.tokens(tokens), dim=-1)
        h = torch.nn.functional.normalize(self.frames(frames), dim=-1)
        return (self.log_inverse_tau.exp() * s @ h.T).log_softmax(dim=-1)


def structure(start: float, end: float, duration: float) -> list[str]:
    """The answer's structural tokens in time order: a transition before the event unless it starts the video, the
    event, a transition after it unless it ends the video (0.1% of the duration counts as touching the edge)."""
    edge = 1e-3 * duration
    return [TRANSITION] * (start > edge) + [EVENT] + [TRANSITION] * (end < duration - edge)


def token_frames(token_ids: list[int], event_id: int, event: torch.Tensor) -> list[torch.Tensor]:
    """The frames (F,) bool each structural token of an answer stands for: the event's frames for ``<ent>``, the
    frames before (after) them for a ``<tst>`` before (after) it. A transition shorter than a frame has none."""
    frames = torch.arange(len(event), device=event.device)
    first, last = int(event.nonzero()[0]), int(event.nonzero()[-1])
    seen_event, out = False, []
    for token in token_ids:
        if token == event_id:
            seen_event = True
            out.append(event)
        else:
            out.append(frames > last if seen_event else frames < first)
    return out


def longest_run(assigned: torch.Tensor) -> tuple[int, int] | None:
    """First and last index of the longest run of True (the earliest of equal runs); None when there is none."""
    best, start = None, None
    for i, on in enumerate([*assigned.tolist(), False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            if best is None or i - start > best[1] - best[0] + 1:
                best = (start, i - 1)
            start = None
    return best


def decode_assignment(
    log_p: torch.Tensor, token_ids: list[int], event_id: int, duration: float
) -> Decoded | None:
    """Each frame to its arg-max structural token (``log_p``: (K, F) log p(h_t | s_i)); the longest run of frames
    given to the first ``<ent>`` (one event per query) is the span. Saliency: the share of each frame's
    probability that goes to that token."""
    event = token_ids.index(event_id)
    assigned = log_p.argmax(dim=0) == event
    run = longest_run(assigned)
    if run is None:
        return None
    width = duration / log_p.shape[1]
    saliency = log_p.softmax(dim=0)[event]
    return Decoded((run[0] * width, (run[1] + 1) * width), saliency.tolist(), assigned.int().tolist())


class MecoPolicy(HiddenStatePolicy):
    """Structural tokens + a query-focused caption; the span comes from grounding ``<ent>`` to frames."""

    name = "meco"
    extra_special_tokens = (EVENT, TRANSITION)
    token_layer = -2  # [paper] structural tokens are read one layer before the last
    loss_parts = ("st",)
    default_loss_weights = (1.0,)  # [paper] LM + L_ST, unweighted
    answer_instruction = (
        f"Go through the video in time order: write {TRANSITION} for a stretch where the event does not happen, "
        f"and a short description of the event followed by {EVENT} where it happens."
    )

    def __init__(self, model, processor, width: int = DEFAULT_WIDTH, loss_weights=()) -> None:
        super().__init__(model, processor, width, loss_weights)
        self.event_id = processor.tokenizer.convert_tokens_to_ids(EVENT)

    def build_module(self, hidden_size: int, width: int) -> StructuralGrounding:
        return StructuralGrounding(hidden_size, width)

    def tvg_target(self, query: str, start: float, end: float, duration: float) -> str:
        return " ".join(
            f"{query.strip()} {EVENT}" if kind == EVENT else kind for kind in structure(start, end, duration)
        )

    def head_losses(self, frames, tokens, token_ids, span, duration):
        if token_ids.count(self.event_id) != 1:
            return None  # a grounding target has exactly one event
        event = frame_labels(len(frames), *span, duration).to(frames.device)
        log_p = self.module(frames, tokens)
        per_token = [
            -log_p[i, seg].mean()
            for i, seg in enumerate(token_frames(token_ids, self.event_id, event))
            if seg.any()
        ]
        return {"st": torch.stack(per_token).mean()}

    def read_span(self, frames, tokens, token_ids, duration) -> Decoded | None:
        if self.event_id not in token_ids:
            return None
        return decode_assignment(self.module(frames, tokens), token_ids, self.event_id, duration)

"""Reading hidden states: the layers a head needs from one forward pass, frame features, and the readout of a
``generate`` call (the HF engine returns each completion's :class:`HiddenStates` from the states generation computed
anyway: no second forward).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class HiddenReadout:
    """What a head reads from hidden states: the frame features (the last layer's video-token states, mean-pooled
    per temporal patch) and the states at ``token_ids`` in the completion from ``token_layer`` (numbered as
    ``output_hidden_states``: -1 the last, after the final norm)."""

    token_ids: tuple[int, ...]
    token_layer: int = -1


@dataclass
class HiddenStates:
    """One completion's readout: (F, H) frame features, (K, H) states at its head tokens and which tokens they are
    (in order; a token generated last, never fed back to the model, has no state and is left out)."""

    frames: torch.Tensor
    tokens: torch.Tensor
    token_ids: list[int]


def _text_model(model: torch.nn.Module) -> torch.nn.Module:
    """The language model's decoder stack (``layers`` + final ``norm``), through DDP / peft wrappers."""
    for module in getattr(model, "module", model).modules():
        layers = getattr(module, "layers", None)
        if (
            isinstance(layers, torch.nn.ModuleList)
            and hasattr(module, "norm")
            and hasattr(module, "embed_tokens")
        ):
            return module
    raise TypeError(f"{type(model).__name__} has no decoder stack (layers + norm) to read hidden states from")


@contextmanager
def capture_layers(
    model: torch.nn.Module, layers: Sequence[int], every_call: bool = False
) -> Iterator[dict[int, Any]]:
    """Keep the hidden states of ``layers`` (numbered as ``output_hidden_states``: -1 after the final norm, -k for
    k >= 2 the output of decoder layer ``n - k``) in the yielded dict: of the next forward pass (B, S, H), or with
    ``every_call`` a list of every forward's (the steps of a ``generate``)."""
    text = _text_model(model)
    store: dict[int, Any] = {}
    handles = []

    def keep(layer: int):
        def hook(module, args, output):
            states = output[0] if isinstance(output, tuple) else output
            if every_call:
                store.setdefault(layer, []).append(states)
            else:  # gradient checkpointing may run a layer again in backward; the first call is the forward's
                store.setdefault(layer, states)

        return hook

    for layer in set(layers):
        if layer == -1:
            target = text.norm
        elif -len(text.layers) <= layer <= -2:
            target = text.layers[len(text.layers) + layer]
        else:
            raise ValueError(f"layer {layer}: use -1 (last, normed) or -2 .. -{len(text.layers)}")
        handles.append(target.register_forward_hook(keep(layer)))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def frame_features(
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    video_grid_thw: torch.Tensor,
    video_token_id: int,
    merge: int,
) -> list[torch.Tensor]:
    """Per row, the mean of its video tokens' states per temporal patch: (F, H) with F = ``video_grid_thw[row, 0]``
    (one video per row, its tokens in time-major order as the processor lays them out)."""
    out = []
    for row, (t, h, w) in enumerate(video_grid_thw.tolist()):
        positions = (input_ids[row] == video_token_id).nonzero()[:, 0]
        per_patch = h * w // (merge * merge)
        if len(positions) != t * per_patch:
            raise ValueError(
                f"row {row}: {len(positions)} video tokens, expected {t} temporal patches x {per_patch}"
            )
        out.append(hidden[row, positions].reshape(t, per_patch, -1).mean(1))
    return out


def generation_readouts(
    readout: HiddenReadout,
    calls: dict[int, list[torch.Tensor]],
    inputs: dict[str, torch.Tensor],
    counts: Sequence[int],
    prefilled: bool,
    new_tokens: torch.Tensor,
    video_token_id: int,
    merge: int,
) -> list[HiddenStates]:
    """Each generated row's :class:`HiddenStates` from the states a ``generate`` call computed (``calls``: every
    forward's, captured with ``capture_layers(every_call=True)``).

    ``prefilled``: the prompts (all but their last token) ran once per request before ``generate``
    (``modeling/prefill.py``), whose first forward then feeds the last prompt token; otherwise the first forward
    is the whole prompt repeated per sample. Either way, the forward after the one that sampled completion token
    ``j`` feeds it back, and its state at the token layer is that token's.
    """
    rows = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(list(counts)))
    prompt = calls[-1][0]
    if prefilled:
        frames = frame_features(
            prompt, inputs["input_ids"][:, :-1], inputs["video_grid_thw"], video_token_id, merge
        )
        frames = [frames[i] for i in rows.tolist()]
        first = 2  # the prefill, then the last prompt token
    else:
        frames = frame_features(
            prompt, inputs["input_ids"][rows], inputs["video_grid_thw"][rows], video_token_id, merge
        )
        first = 1
    steps = calls[readout.token_layer]
    out = []
    for row, tokens in enumerate(new_tokens.tolist()):
        positions = [j for j, t in enumerate(tokens) if t in readout.token_ids and first + j < len(steps)]
        states = [steps[first + j][row, -1] for j in positions]
        out.append(
            HiddenStates(
                frames=frames[row].cpu(),
                tokens=torch.stack(states).cpu() if states else prompt.new_zeros(0, prompt.shape[-1]).cpu(),
                token_ids=[tokens[j] for j in positions],
            )
        )
    return out

"""Stage 1 of a warm start from a random vision tower: clip-level action recognition, before the language model learns.

Real VLMs start from a pretrained vision encoder; only then does the language model learn to talk about what it
sees. The tiny offline model's tower is random, and learning it *through* next-token prediction of a verb takes
thousands of steps (docs/results/compare.md). This stage trains the tower (patch embedding, blocks and merger)
through ``get_video_features`` on the ground-truth clips of the training queries, labelled with the query's
action-verb lemma, read out from every video token by one linear layer. The read-out is thrown away afterwards; only
the tower's weights stay. The benchmark's grounding answers are never seen: a clip and what it shows, nothing about
where it lies in its video.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from invert4tvg.data.cache import FrameCache
from invert4tvg.data.frames import VideoSampling
from invert4tvg.data.records import GroundingRecord
from invert4tvg.modeling.processing import video_processor_kwargs
from invert4tvg.tasks import TaskUnavailable, build_task_instance
from invert4tvg.training.batch_videos import VideoFailureBudget, load_videos
from rewards import nlp

logger = logging.getLogger(__name__)


def clip_action(query: str) -> str | None:
    """The action a query says its clip shows (its first action verb's lemma); None when it has no action verb."""
    lemmas = nlp.action_verb_lemmas([query])[0]
    return lemmas[0] if lemmas else None


@dataclass
class Clips:
    """Processed clips ready for the tower: per clip its patches, its grid and its action's class index."""

    patches: list[torch.Tensor]
    grids: list[torch.Tensor]
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.patches)

    def batch(self, index: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            torch.cat([self.patches[i] for i in index]),
            torch.stack([self.grids[i] for i in index]),
            self.targets[list(index)],
        )


def load_clips(
    processor,
    records: Sequence[GroundingRecord],
    sampling: VideoSampling,
    cache: FrameCache | None,
    classes: list[str] | None = None,
    budget: VideoFailureBudget | None = None,
) -> tuple[Clips, list[str]]:
    """Decode and process each record's ground-truth clip once. ``classes`` (action lemmas) come from the training
    clips; a validation clip whose action is not among them counts as wrong (target -1)."""
    actions = {r.id: clip_action(r.query) for r in records}
    instances = []
    for record in records:
        if actions[record.id] is None:
            continue
        try:  # the same clip the VC / AR / VD prompts feed
            instances.append(build_task_instance(record, "vd", sampling))
        except TaskUnavailable:
            continue
    kept, videos = load_videos(instances, cache, budget or VideoFailureBudget(1.0))
    if len(kept) < len(records):
        no_verb = sum(a is None for a in actions.values())
        logger.info(
            "vision pretraining: %d of %d records give no clip (%d without an action verb, %d with an empty span, "
            "%d whose video did not decode)",
            len(records) - len(kept),
            len(records),
            no_verb,
            len(records) - no_verb - len(instances),
            len(instances) - len(kept),
        )
    labels = [actions[i.record_id] for i in kept]
    if classes is None:
        classes = sorted(set(labels))
    targets = torch.tensor([classes.index(a) if a in classes else -1 for a in labels])
    patches, grids = [], []
    options = video_processor_kwargs(processor)
    for video in tqdm(videos, desc="vision clips", leave=False, disable=len(videos) < 200):
        out = processor.video_processor(
            videos=[video.frames], video_metadata=[video.video_metadata()], return_tensors="pt", **options
        )
        patches.append(out["pixel_values_videos"])
        grids.append(out["video_grid_thw"][0])
    return Clips(patches, grids, targets), classes


def _token_features(model: torch.nn.Module, patches: torch.Tensor, grids: torch.Tensor) -> list[torch.Tensor]:
    """Per clip, the tower's merged tokens (what the language model reads), one row per token."""
    return list(model.get_video_features(pixel_values_videos=patches, video_grid_thw=grids).pooler_output)


def _token_loss(readout: torch.nn.Module, tokens: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Every token is read out on its own and must name its clip's action, so the language model finds the action
    in whichever video token it attends to. Measured on lookalike val (docs/results/compare.md): a read-out of the
    first and last frame pairs reached 82% action accuracy, but the language model reading that tower learnt the
    verbs slowly (VC / AR / VD 27-30% after 1,500 SFT steps); from this one, 88 / 87 / 91%."""
    logits = torch.cat([readout(t) for t in tokens])
    labels = torch.cat([target.repeat(len(t)) for target, t in zip(targets, tokens)])
    return torch.nn.functional.cross_entropy(logits, labels, ignore_index=-1)


def _accuracy(model: torch.nn.Module, readout: torch.nn.Module, clips: Clips, batch_size: int) -> float:
    """Percent of clips whose tokens' mean logits name their action."""
    hits = 0
    with torch.no_grad():
        for i in range(0, len(clips), batch_size):
            patches, grids, targets = clips.batch(range(i, min(i + batch_size, len(clips))))
            logits = torch.stack([readout(t).mean(0) for t in _token_features(model, patches, grids)])
            hits += int((logits.argmax(-1) == targets).sum())
    return 100.0 * hits / max(len(clips), 1)


def pretrain_vision_tower(
    model: torch.nn.Module,
    processor,
    records: Sequence[GroundingRecord],
    sampling: VideoSampling,
    *,
    epochs: int,
    learning_rate: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    cache: FrameCache | None = None,
    val_records: Sequence[GroundingRecord] = (),
) -> dict[str, float]:
    """Train ``model``'s vision tower in place on clip action recognition for ``epochs`` passes over the training
    clips. Returns the read-out's final accuracy in percent (``train/action``, and ``val/action`` for
    ``val_records``). The tower's ``requires_grad`` flags are restored afterwards (frozen stays frozen for SFT)."""
    clips, classes = load_clips(processor, records, sampling, cache)
    if len(clips) < 2:
        raise ValueError(
            f"vision pretraining needs clips with an action verb in their query; {len(records)} training records "
            f"gave {len(clips)}. Set vision_pretrain_epochs: 0 for a model whose vision tower is pretrained."
        )
    val = load_clips(processor, val_records, sampling, cache, classes)[0] if val_records else None
    tower = model.model.visual if hasattr(model, "model") else model.visual
    flags = {name: p.requires_grad for name, p in tower.named_parameters()}
    tower.requires_grad_(True)
    generator = torch.Generator().manual_seed(seed)
    width = model.config.vision_config.out_hidden_size
    # The read-out normalises first: a random tower's features are small (~0.04, the init scale), which a bare
    # linear layer would need hundreds of extra steps to scale up.
    readout = torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, len(classes)))
    # The fresh read-out learns 10x faster than the tower (measured on lookalike val: action accuracy 71% after 10
    # epochs against 26% with one learning rate).
    optimizer = torch.optim.AdamW(
        [{"params": tower.parameters()}, {"params": readout.parameters(), "lr": 10 * learning_rate}],
        lr=learning_rate,
    )
    logger.info(
        "vision pretraining: %d clips, %d actions, %d epochs, batch %d",
        len(clips),
        len(classes),
        epochs,
        batch_size,
    )
    was_training = model.training
    model.train()
    for epoch in tqdm(range(epochs), desc="vision pretraining", unit="epoch"):
        order = torch.randperm(len(clips), generator=generator).tolist()
        for i in range(0, len(order), batch_size):
            patches, grids, targets = clips.batch(order[i : i + batch_size])
            loss = _token_loss(readout, _token_features(model, patches, grids), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if val is not None and (epoch + 1) % 5 == 0 and epoch + 1 < epochs:
            model.eval()
            logger.info(
                "vision pretraining epoch %d: val action %.1f%%",
                epoch + 1,
                _accuracy(model, readout, val, 64),
            )
            model.train()
    # No gradient of stage 1 may reach SFT's first step.
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    results = {"train/action": _accuracy(model, readout, clips, 64)}
    if val is not None:
        results["val/action"] = _accuracy(model, readout, val, 64)
    model.train(was_training)
    for name, p in tower.named_parameters():
        p.requires_grad_(flags[name])
    logger.info(
        "vision pretraining done: %s", ", ".join(f"{k} accuracy {v:.1f}%" for k, v in results.items())
    )
    return {k: round(v, 2) for k, v in results.items()}

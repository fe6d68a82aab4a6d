"""The lookalike warm start: stage 1 (the vision tower learns to recognise clips) and `compare` reusing it."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from invert4tvg.config import ModelArguments
from invert4tvg.data.formats import load_records
from invert4tvg.data.synthetic import SynthConfig, generate_benchmark
from invert4tvg.policy.loading import load_policy
from invert4tvg.sft.vision_pretrain import clip_action, pretrain_vision_tower
from invert4tvg.workflows import compare
from invert4tvg.workflows.demo import ensure_benchmark


@pytest.fixture(scope="module")
def lookalike_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("lookalike") / "bench"
    config = SynthConfig.preset("lookalike")
    return generate_benchmark(out, 6, seed=0, config=config, workers=1, progress=False)


def test_clip_action_is_the_query_verb_lemma():
    assert clip_action("a blue circle is closing") == "close"
    assert clip_action("The yellow triangle opens.") == "open"
    assert clip_action("a blue circle") is None  # no action verb: no label, the clip is left out


def test_vision_pretraining_learns_the_clips_and_touches_only_the_tower(
    tiny_model_dir, lookalike_bench, tiny_sampling
):
    records = load_records(
        "tvg-json", lookalike_bench / "train.json", video_dir=lookalike_bench / "videos"
    ).records
    policy = load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32"))
    model = policy.model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    torch.manual_seed(0)
    results = pretrain_vision_tower(
        model, policy.processor, records, tiny_sampling, epochs=25, learning_rate=3e-3, batch_size=8
    )
    classes = len({clip_action(r.query) for r in records})
    # A handful of clips, memorised: far above chance (1 / classes) on what it trained on.
    assert results["train/action"] > 2 * 100 / classes, results
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".visual." in f".{k}" for k in changed), sorted(changed)[:5]
    assert {k for k, p in model.named_parameters() if not p.requires_grad} == frozen  # flags restored


def test_compare_builds_the_warm_start_once_and_rebuilds_when_its_recipe_changes(tmp_path, caplog):
    root = tmp_path / "compare"
    ensure_benchmark(root / "bench", 6, 0, "lookalike")
    small = {
        "--grounding_annotations": "{bench}/train_ordinal.json",
        "--max_steps": "2",
        "--vision_pretrain_epochs": "1",
        "--eval_steps": "0",
        "--per_device_train_batch_size": "4",
    }
    bed = compare.Testbed("lookalike", "sft_lookalike_cpu.yaml", "lookalike_cpu.yaml", sft_overrides=small)
    caplog.set_level(logging.INFO, logger="invert4tvg.workflows.compare")
    evaluation = compare.warm_start(root, bed)
    weights = root / "sft" / "final" / "model.safetensors"
    built = weights.stat().st_mtime_ns
    key = json.loads((root / "sft" / "warm_start_key.json").read_text())
    assert set(key) == {"recipe", "benchmark", "code"}
    assert (evaluation / "metrics.json").exists()
    metadata = json.loads((root / "sft" / "metadata.json").read_text())
    assert set(metadata["vision_pretraining"]) >= {"train/action", "val/action"}

    caplog.clear()
    assert compare.warm_start(root, bed) == evaluation
    assert weights.stat().st_mtime_ns == built  # reused, not retrained
    assert "reusing" in caplog.text

    caplog.clear()
    compare.warm_start(
        root,
        compare.Testbed(
            "lookalike", bed.sft_config, bed.grpo_config, sft_overrides={**small, "--max_steps": "3"}
        ),
    )
    assert weights.stat().st_mtime_ns != built
    assert "the recipe changed" in caplog.text
    assert (evaluation / "metrics.json").exists()  # the new warm start is evaluated again

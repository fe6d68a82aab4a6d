"""The `lookalike` testbed: a benchmark on which action understanding is needed for grounding and measurable.

An oracle that knows each action must score 100% on VC, AR and VD with the project's own rewards, verb-blind
grounding baselines must stay far below a model that knows the action, and the masked verb of VC must not be
guessable from the rest of the query.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from invert4tvg.data.synthetic import SynthConfig, generate_benchmark
from invert4tvg.data.synthetic.actions import ACTIONS
from invert4tvg.data.synthetic.language import ONE_LEMMA
from invert4tvg.eval.oracle import (
    baseline_miou,
    load_truth,
    oracle_accuracy,
    text_only_vc_accuracy,
)
from rewards import nlp

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("lookalike")
    return generate_benchmark(out, 160, seed=3, config=SynthConfig.preset("lookalike"), progress=False)


def test_every_action_has_one_lemma_of_its_own():
    lemmas = {}
    for action, (present, past) in ONE_LEMMA.items():
        forms = {nlp.verb_lemmas([f"the red circle {p}."])[0][-1] for p in (*present, *past)}
        assert len(forms) == 1, (action, forms)
        lemmas[action] = forms.pop()
    assert len(set(lemmas.values())) == len(lemmas), lemmas
    assert set(SynthConfig.preset("lookalike").actions) == set(ONE_LEMMA)


@pytest.mark.parametrize("split", SPLITS)
def test_oracle_scores_100_on_every_inversion_task(bench, split):
    assert oracle_accuracy(bench, split) == {"VC": 100.0, "AR": 100.0, "VD": 100.0}


def test_every_query_has_a_lookalike_span_of_the_same_object(bench):
    for split in SPLITS:
        for truth in load_truth(bench, split):
            video = truth.record.video_id
            opposite = ACTIONS[truth.action].opposite
            with open(bench / "events.jsonl") as fh:
                objects = next(v for v in map(json.loads, fh) if v["video_id"] == video)["objects"]
            obj = next(o for o in objects if (o["colour"], o["shape"]) == (truth.colour, truth.shape))
            assert opposite in {a["action"] for a in obj["actions"]}, (video, truth.action)
            assert len(truth.object_actions) >= 3  # neither "when it moves" nor a coin flip finds the span


@pytest.mark.parametrize("split", SPLITS)
def test_verb_blind_baselines_stay_below_40_miou(bench, split):
    baselines = baseline_miou(bench, split)
    assert set(baselines) == {"whole_video", "object_active", "object_any_action"}
    assert all(v < 40.0 for v in baselines.values()), baselines


def test_masked_verb_cannot_be_guessed_from_text(bench):
    result = text_only_vc_accuracy(bench, "test")
    # A text-only guess does no better than always answering the most frequent action (plus sampling noise).
    assert result["actions"] == 12
    assert result["accuracy"] <= result["chance"] + 5.0, result


def test_objects_stay_visible_outside_their_actions():
    config = SynthConfig.preset("lookalike")
    assert config.visibility == "always" and config.absent_start_prob == 0.0


def test_activity_annotations_span_each_objects_actions(bench):
    activity = json.loads((bench / "train_activity.json").read_text())
    spans = defaultdict(list)
    with open(bench / "events.jsonl") as fh:
        for video in map(json.loads, fh):
            for obj in video["objects"]:
                if obj["actions"]:
                    spans[video["video_id"]].append([obj["actions"][0]["start"], obj["actions"][-1]["end"]])
    assert activity
    for video_id, entry in activity.items():
        assert entry["timestamps"] == spans[video_id]
        assert all(s.lower().rstrip(".").endswith("changes") for s in entry["sentences"])


def test_ordinal_annotations_give_each_action_by_its_rank_never_its_verb(bench):
    ordinal = json.loads((bench / "train_ordinal.json").read_text())
    verbs = {"open", "close", "grow", "shrink", "rise", "fall", "advance", "retreat", "appear", "enter", "leave"}
    with open(bench / "events.jsonl") as fh:
        videos = [v for v in map(json.loads, fh) if v["split"] == "train"]
    assert ordinal
    for video in videos:
        actions = [a for obj in video["objects"] for a in obj["actions"]]
        entry = ordinal[video["video_id"]]
        assert entry["timestamps"] == [[a["start"], a["end"]] for a in actions]
        ranks = [s.lower().rstrip(".").split(" for the ")[1] for s in entry["sentences"]]
        assert ranks == [f"{k} time" for k in ("first", "second", "third", "fourth")[: len(actions)]]
        assert not any(verbs & set(s.lower().rstrip(".").split()) for s in entry["sentences"])

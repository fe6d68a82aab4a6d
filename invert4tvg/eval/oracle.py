"""What a benchmark allows without a model: an oracle that knows every action, and the shortcuts a model could take.

A benchmark on which the paper's claim can be tested must let a perfect model score 100% on the inversion tasks
with the project's own rewards (so the rewards measure action understanding, not paraphrase guessing), and must
not let grounding be solved without knowing the action. These functions measure both from ``events.jsonl``:

- :func:`oracle_accuracy`: VC / AR / VD scored by the registered rewards on answers written by an oracle that knows
  each query's action (its canonical verb for AR, "The <object> <verb>." for VD, the masked query completed in the
  matching form for VC).
- :func:`baseline_miou`: mIoU of spans chosen without the query's verb: the whole video, the named object's active
  span (first action's start to last action's end) and a uniformly chosen action of the named object (expected IoU).
- :func:`text_only_vc_accuracy`: the best a text-only guess of the masked verb does: for each masked query text of
  the training split its most frequent action, applied to another split.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invert4tvg.data.formats import load_records
from invert4tvg.data.records import GroundingRecord
from invert4tvg.data.synthetic.language import WORDINGS
from invert4tvg.tasks.instances import build_task_instance, reward_columns
from invert4tvg.tasks.masking import mask_query
from rewards import registry
from rewards.base import INVERSION_TASKS


@dataclass(frozen=True)
class QueryTruth:
    """What the generator knows about one query: the record, the named object and its actions."""

    record: GroundingRecord
    action: str
    colour: str
    shape: str
    object_actions: tuple[tuple[float, float], ...]  # spans of every action of the named object


def load_truth(bench: str | Path, split: str) -> list[QueryTruth]:
    """Every single-action query of ``split`` with its generator-side truth (two-verb queries are left out)."""
    bench = Path(bench)
    wording = json.loads((bench / "metadata.json").read_text())["config"].get("wording", "varied")
    if wording not in WORDINGS:
        raise ValueError(f"{bench}/metadata.json: unknown wording {wording!r}")
    videos = {}
    with open(bench / "events.jsonl") as fh:
        for line in fh:
            video = json.loads(line)
            videos[video["video_id"]] = video
    records = load_records("tvg-json", bench / f"{split}.json", video_dir=bench / "videos").records
    out = []
    for record in records:
        video = videos[record.video_id]
        query = video["queries"][int(record.id.rsplit("_", 1)[1])]
        if len(query["actions"]) != 1:
            continue
        obj = video["objects"][query["object"]]
        spans = tuple((a["start"], a["end"]) for a in obj["actions"])
        out.append(QueryTruth(record, query["actions"][0], obj["colour"], obj["shape"], spans))
    return out


def _wording(bench: str | Path) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    return WORDINGS[
        json.loads((Path(bench) / "metadata.json").read_text())["config"].get("wording", "varied")
    ]


def oracle_answer(task: str, truth: QueryTruth, masked_query: str, wording: dict) -> str:
    """The oracle's completion for ``task`` (think + answer, so the format reward is satisfied too)."""
    present = wording[truth.action][0]
    simple = next(p for p in present if not p.startswith("is "))
    progressive = next((p for p in present if p.startswith("is ")), "is " + simple)
    if task == "ar":
        answer = simple.split()[0]
    elif task == "vd":
        answer = f"The {truth.colour} {truth.shape} {simple}."
    elif task == "vc":
        answer = masked_query.replace("is []", progressive).replace("[]", simple)
    else:
        raise ValueError(f"the oracle answers vc, ar or vd, not {task!r}")
    return f"<think>I watch the clip.</think> <answer>{answer}</answer>"


def oracle_accuracy(bench: str | Path, split: str) -> dict[str, float]:
    """VC / AR / VD accuracy (percent) of the oracle, scored by the registered rewards."""

    truths, wording = load_truth(bench, split), _wording(bench)
    out = {}
    for task in INVERSION_TASKS:
        instances = [build_task_instance(t.record, task) for t in truths]
        completions = [
            oracle_answer(task, t, inst.columns["masked_query"], wording)
            for t, inst in zip(truths, instances)
        ]
        scores = registry.get(task)(completions=completions, **reward_columns(instances))
        out[task.upper()] = 100.0 * sum(scores) / len(scores)
    return out


def _iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def baseline_miou(bench: str | Path, split: str) -> dict[str, float]:
    """mIoU (percent) of the verb-blind baselines named in the module docstring."""
    truths = load_truth(bench, split)
    scores: dict[str, list[float]] = defaultdict(list)
    for t in truths:
        gt = (t.record.start, t.record.end)
        scores["whole_video"].append(_iou((0.0, t.record.duration), gt))
        scores["object_active"].append(_iou((t.object_actions[0][0], t.object_actions[-1][1]), gt))
        scores["object_any_action"].append(sum(_iou(s, gt) for s in t.object_actions) / len(t.object_actions))
    return {k: 100.0 * sum(v) / len(v) for k, v in scores.items()}


def text_only_vc_accuracy(bench: str | Path, split: str = "test") -> dict[str, Any]:
    """Accuracy (percent) of guessing the masked action from the masked query text alone, learned on train, with
    the chance level it should be compared with (the most frequent action of ``split``)."""

    def keyed(truths: list[QueryTruth]) -> list[tuple[str, str]]:
        return [(mask_query(t.record.query).text.lower().strip(" ."), t.action) for t in truths]

    train = keyed(load_truth(bench, "train"))
    table: dict[str, Counter] = defaultdict(Counter)
    for text, action in train:
        table[text][action] += 1
    overall = Counter(a for _, a in train).most_common(1)[0][0]
    held_out = keyed(load_truth(bench, split))
    hits = sum((table[text].most_common(1)[0][0] if text in table else overall) == a for text, a in held_out)
    counts = Counter(a for _, a in held_out)
    return {
        "accuracy": 100.0 * hits / len(held_out),
        "chance": 100.0 * counts.most_common(1)[0][1] / len(held_out),
        "actions": len(counts),
        "queries": len(held_out),
    }

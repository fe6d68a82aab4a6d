"""Reward throughput: completions scored per second, per built-in reward, on one core.

10k synthetic but realistic completions (a think section of 20-60 words, then the answer each task asks for; about
10% malformed), grouped as GRPO produces them: 8 generations per query, scored in calls of 64 (one step's batch).
"Cold" empties the NLP text cache and the tagger's word cache first (lemminflect's dictionaries are already loaded);
answers that repeat within the run (one-word AR answers do) then hit the cache, as they would in training. "Warm"
scores the same completions again.

    .venv/bin/python benchmarks/reward_speed.py [--n 10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lemminflect
import spacy

import rewards
from rewards import nlp
from rewards.nlp.tagger import lex

SUBJECTS = ["a person", "the person", "person", "someone", "a man", "the woman", "he", "she"]
VERBS = [
    ("open", "the door"), ("close", "the window"), ("drink", "from a cup"), ("hold", "a phone"),
    ("put", "a book on the shelf"), ("take", "a towel"), ("sit", "on the couch"), ("watch", "television"),
    ("eat", "a sandwich"), ("pour", "water into a glass"), ("throw", "a pillow"), ("wash", "the dishes"),
    ("turn", "off the light"), ("laugh", "at a picture"), ("walk", "through the doorway"), ("run", "out of the room"),
    ("dress", "in front of the mirror"), ("fix", "the vacuum"), ("tidy", "the closet"), ("sneeze", "into a tissue"),
]  # fmt: skip
FILLER_TEXT = (
    "the video shows a room with a table and a chair near the window while the camera stays still and the light "
    "changes slightly as people move around the space before the clip ends"
)
FILLER = FILLER_TEXT.split(" ")
GROUP, BATCH = 8, 64


def inflect(verb: str, tag: str) -> str:
    forms = lemminflect.getInflection(verb, tag=tag)
    return forms[0] if forms else verb


ADVERBS = ["", "", "", "slowly ", "quickly ", "then ", "carefully ", "again "]
PLACES = [
    "",
    "",
    "in the kitchen",
    "near the window",
    "in the bedroom",
    "by the table",
    "at the door",
    "on the floor",
]
ENDINGS = [
    "",
    "",
    "for a while",
    "twice",
    "with both hands",
    "before leaving",
    "while smiling",
    "after a pause",
]


def event(rng: random.Random, tag: str = "VBZ") -> str:
    """One action sentence; with the optional parts there are about 10^5 distinct ones, as varied as sampled text."""
    verb, rest = rng.choice(VERBS)
    extra = " ".join(x for x in (rng.choice(PLACES), rng.choice(ENDINGS)) if x)
    return f"{rng.choice(SUBJECTS)} {rng.choice(ADVERBS)}{inflect(verb, tag)} {rest} {extra}".strip()


def think(rng: random.Random) -> str:
    words = rng.sample(FILLER, k=min(len(FILLER), rng.randint(20, 30))) + event(rng).split()
    return " ".join(words * rng.randint(1, 2))


def answer(rng: random.Random, task: str) -> str:
    if task == "tvg":
        start = rng.uniform(0, 25)
        return f"{start:.2f} to {start + rng.uniform(1, 10):.2f}"
    if task == "ar":
        verb = rng.choice(VERBS)[0]
        return inflect(verb, rng.choice(["VB", "VBG", "VBD"])) if rng.random() < 0.8 else event(rng, "VBZ")
    if task == "vc":
        return event(rng, rng.choice(["VBZ", "VBD"]))
    return f"{event(rng, 'VBZ')} and then {event(rng, 'VBD')}, {rng.choice(FILLER)} nearby."


def completion(rng: random.Random, task: str) -> str:
    body = f"<think>{think(rng)}</think> <answer>{answer(rng, task)}</answer>"
    if rng.random() < 0.1:  # malformed: missing tags or truncated
        return body.replace("<think>", "") if rng.random() < 0.5 else body[: rng.randint(10, len(body))]
    return body


def dataset(n: int, tasks: list[str], seed: int = 0) -> tuple[list[str], dict[str, list]]:
    rng = random.Random(seed)
    completions: list[str] = []
    columns: dict[str, list] = {k: [] for k in ("task", "query", "start", "end", "duration", "masked_query")}
    columns["masked_verbs"] = []
    for g in range(0, n, GROUP):
        task = tasks[(g // GROUP) % len(tasks)]
        verb, rest = rng.choice(VERBS)
        query = f"{rng.choice(SUBJECTS)} {inflect(verb, 'VBZ')} {rest}"
        start = rng.uniform(0, 20)
        for _ in range(min(GROUP, n - g)):
            completions.append(completion(rng, task))
            row = {
                "task": task, "query": query, "start": start, "end": start + 6.0, "duration": 30.0,
                "masked_query": query.replace(inflect(verb, "VBZ"), "[]", 1), "masked_verbs": [verb],
            }  # fmt: skip
            for key, value in row.items():
                columns[key].append(value)
    return completions, columns


def throughput(reward: Callable, completions: list[str], columns: dict[str, list], cold: bool) -> float:
    if cold:
        nlp.clear_cache()
        lex.cache_clear()
    start = time.perf_counter()
    for i in range(0, len(completions), BATCH):
        reward(completions[i : i + BATCH], **{k: v[i : i + BATCH] for k, v in columns.items()})
    return len(completions) / (time.perf_counter() - start)


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores_visible": str(os.cpu_count()),
        "python": platform.python_version(),
        "spacy": spacy.__version__,
        "nlp_backend": nlp.backend_name(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--n", type=int, default=10_000, help="completions per reward")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the targets are stated
    nlp.verb_lemmas(["a person warms up the pipeline"])  # load spaCy and lemminflect outside the timings
    cases = {
        "format": ["tvg", "vc", "ar", "vd"],
        "iou": ["tvg"],
        "vc": ["vc"],
        "ar": ["ar"],
        "vd": ["vd"],
        "invert4tvg": [
            "tvg",
            "tvg",
            "tvg",
            "tvg",
            "vc",
            "tvg",
            "tvg",
            "tvg",
            "tvg",
            "ar",
            "tvg",
            "tvg",
            "vd",
        ],
    }
    results = {}
    print(f"{'reward':<12} {'cold /s':>10} {'warm /s':>10} {'distinct answers':>17}")
    for name, tasks in cases.items():
        completions, columns = dataset(args.n, tasks)
        distinct = len({rewards.answer_text(c) for c in completions})
        reward = rewards.get(name)
        cold = throughput(reward, completions, columns, cold=True)
        warm = throughput(reward, completions, columns, cold=False)
        results[name] = {"cold_per_s": round(cold), "warm_per_s": round(warm), "distinct_answers": distinct}
        print(f"{name:<12} {cold:>10,.0f} {warm:>10,.0f} {distinct:>17,}")
    info = machine()
    print("machine:", ", ".join(f"{k}={v}" for k, v in info.items()))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "n": args.n, "results": results}, indent=2))


if __name__ == "__main__":
    main()

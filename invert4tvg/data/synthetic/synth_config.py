"""Knobs of the synthetic grounding benchmark, with a Charades-like default and a demo-sized preset."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

# Saturated colours that stay distinct after yuv420p chroma subsampling at 56x56.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 190, 60),
    "blue": (45, 95, 240),
    "yellow": (240, 215, 35),
    "purple": (155, 60, 210),
    "orange": (250, 140, 25),
    "white": (245, 245, 245),
    "cyan": (35, 210, 220),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
PAIRED_ACTIONS: tuple[tuple[str, str], ...] = (
    ("grow", "shrink"),
    ("appear", "disappear"),
    ("enter", "leave"),
    ("move_left", "move_right"),
    ("rise", "fall"),
    ("open", "close"),
)

# Every action the generator knows (see actions.py); pairs differ only in the direction of change over time.
ACTION_NAMES: tuple[str, ...] = (
    "grow",
    "shrink",
    "appear",
    "disappear",
    "enter",
    "leave",
    "move_left",
    "move_right",
    "rise",
    "fall",
    "open",
    "close",
    "spin",
    "bounce",
    "shake",
    "blink",
    "pulse",
)


@dataclass(frozen=True)
class SynthConfig:
    """Everything that shapes the benchmark. Defaults: 112x112 at 8 fps, 8-30 s videos, events of 2-5 s.

    Difficulty knobs: frame size, ``fps``, the duration range, events per object, event lengths, which
    ``actions`` / ``colours`` / ``shapes`` occur, how many other objects share the scene (and how many actions
    they perform), background ``texture``, and ``opposite_prob``: the chance that an object which performed one
    member of a pair (grow/shrink, appear/disappear, ...) later performs the other in the same video.
    """

    width: int = 112
    height: int = 112
    fps: int = 8
    duration: tuple[float, float] = (8.0, 30.0)
    event_length: tuple[float, float] = (2.0, 5.0)
    min_gap: float = 0.5  # seconds between two actions of the same object
    edge_margin: float = 0.5  # no action starts before this or ends within this of the video's end
    events_per_object: tuple[int, int] = (2, 4)  # for the main object
    distractors: tuple[int, int] = (0, 2)  # other objects in the scene
    distractor_events: tuple[int, int] = (0, 2)  # actions each of them performs (they are queried too)
    actions: tuple[str, ...] = ACTION_NAMES
    colours: tuple[str, ...] = tuple(COLOURS)
    shapes: tuple[str, ...] = SHAPES
    object_size: tuple[float, float] = (0.22, 0.3)  # of min(width, height)
    texture: bool = True
    # "tint": the background brightens by ``clock_step`` grey levels per second, so elapsed time is visible in
    # every frame. A model trained from scratch in minutes (the CPU demo) reads time from pixels long before it
    # learns to read Qwen2.5-VL's temporal position ids; pretrained Qwen2.5-VL needs no clock ("none").
    clock: str = "none"
    clock_step: float = 6.0
    # "acting": an object is drawn only while it performs an action, so the named object's presence marks its
    # spans (grounding by who, not only by what): the easy mode the CPU demo trains on. "always": the benchmark.
    visibility: str = "always"
    # Seconds that video durations and action boundaries are rounded to (0: no rounding). A grid of 1 s matches
    # Qwen2.5-VL's temporal patch at 2 fps (two frames per patch), so a span is exactly a set of patches.
    time_grid: float = 0.0
    opposite_prob: float = 0.6
    # "varied": several verbs per action (grows / gets bigger / expands), as people write queries. "one_lemma": every
    # phrasing of an action uses one verb lemma that no other action shares and nothing else (no particles or
    # objects), so the verb is the only word that tells two actions apart (the ``lookalike`` preset).
    wording: str = "varied"
    # "all": every action is queried. "paired": only actions whose look-alike (grow/shrink, ...) the same object also
    # performs in the same video, so every query's span has a decoy that only the action tells apart.
    queries: str = "all"
    absent_start_prob: float = 0.2  # chance an object's first action is appear/enter (it starts unseen)
    two_verb_prob: float = (
        0.5  # chance that two close consecutive actions also get a "... and then ..." query
    )
    two_verb_max_gap: float = 1.5
    past_tense_prob: float = 0.1
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    crf: int = 20
    keyframe_interval: float = 2.0  # seconds; short GOPs keep clip reads cheap

    def __post_init__(self) -> None:
        problems = []
        if self.width % 2 or self.height % 2 or min(self.width, self.height) < 28:
            problems.append(f"width/height must be even and >= 28 (yuv420p), got {self.width}x{self.height}")
        if self.fps < 2:
            problems.append(f"fps must be >= 2, got {self.fps}")
        lo, hi = self.duration
        if not 0 < lo <= hi:
            problems.append(f"duration range must satisfy 0 < min <= max, got {self.duration}")
        elo, ehi = self.event_length
        if not 0 < elo <= ehi:
            problems.append(f"event_length range must satisfy 0 < min <= max, got {self.event_length}")
        if lo < elo + 2 * self.edge_margin:
            problems.append(f"the shortest video ({lo} s) cannot hold one event of {elo} s plus margins")
        for name, (a, b) in (
            ("events_per_object", self.events_per_object),
            ("distractors", self.distractors),
            ("distractor_events", self.distractor_events),
        ):
            if not 0 <= a <= b:
                problems.append(f"{name} must satisfy 0 <= min <= max, got {(a, b)}")
        if self.events_per_object[1] < 1:
            problems.append("events_per_object must allow at least one event")
        unknown = [a for a in self.actions if a not in ACTION_NAMES]
        unknown += [c for c in self.colours if c not in COLOURS]
        unknown += [s for s in self.shapes if s not in SHAPES]
        if unknown:
            problems.append(
                f"unknown actions/colours/shapes {unknown}; known: {ACTION_NAMES}, {tuple(COLOURS)}, {SHAPES}"
            )
        if self.time_grid < 0 or (self.time_grid and self.time_grid > self.event_length[0]):
            problems.append(f"time_grid must be 0 or at most the shortest event, got {self.time_grid}")
        if self.visibility not in ("always", "acting"):
            problems.append(f"visibility must be 'always' or 'acting', got {self.visibility!r}")
        if self.wording not in ("varied", "one_lemma"):
            problems.append(f"wording must be 'varied' or 'one_lemma', got {self.wording!r}")
        if self.queries not in ("all", "paired"):
            problems.append(f"queries must be 'all' or 'paired', got {self.queries!r}")
        if self.clock not in ("none", "tint"):
            problems.append(f"clock must be 'none' or 'tint', got {self.clock!r}")
        if not self.actions or not self.colours or not self.shapes:
            problems.append("actions, colours and shapes must be non-empty")
        if len(self.colours) * len(self.shapes) < 1 + self.distractors[1]:
            problems.append("not enough colour x shape combinations for distinct objects")
        if len(self.split) != 3 or any(s < 0 for s in self.split) or not math.isclose(sum(self.split), 1.0):
            problems.append(f"split must be three non-negative fractions summing to 1, got {self.split}")
        for name in ("opposite_prob", "absent_start_prob", "two_verb_prob", "past_tense_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1]")
        if problems:
            raise ValueError("invalid SynthConfig: " + "; ".join(problems))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SynthConfig:
        """``charades`` (the default); ``tiny``: 56x56, 4 fps, 8-16 s, one optional distractor, plain background,
        clearly separated actions; ``demo``: ``tiny`` made learnable from scratch on a CPU in minutes (a visible
        clock, one object shown only while it acts, whole-second boundaries, the five look-alike pairs), what
        ``make demo`` trains on; ``lookalike``: the testbed for the paper's claim (one object performs two
        look-alike pairs, one verb lemma per action), what ``make compare`` trains on."""
        presets: dict[str, dict[str, Any]] = {
            "charades": {},
            "tiny": {
                "width": 56,
                "height": 56,
                "fps": 4,
                "duration": (8.0, 16.0),
                "event_length": (2.0, 4.0),
                "min_gap": 1.0,
                "events_per_object": (2, 3),
                "distractors": (0, 1),
                "distractor_events": (0, 1),
                "colours": ("red", "green", "blue", "yellow"),
                "shapes": ("circle", "square", "triangle"),
                "object_size": (0.3, 0.38),
                "texture": False,
                "past_tense_prob": 0.0,
            },
        }
        # The CPU demo's benchmark: what a ~1 M-parameter model trained from scratch learns to ground within
        # minutes on 2 cores (docs/results/demo.md has the measurements behind each choice). One object per video,
        # drawn only while it performs its single action, over a background that brightens 14 grey levels per
        # second (a clock it can read), with boundaries on whole seconds; the five look-alike pairs remain, so the
        # inversion tasks (VC/AR/VD) still need the direction of change.
        presets["demo"] = {
            **presets["tiny"],
            "clock": "tint",
            "clock_step": 14.0,
            "visibility": "acting",
            "time_grid": 1.0,
            "events_per_object": (1, 1),
            "distractors": (0, 0),
            "actions": (
                "appear",
                "disappear",
                "grow",
                "shrink",
                "move_left",
                "move_right",
                "rise",
                "fall",
                "enter",
                "leave",
            ),
        }
        # The testbed on which action understanding is needed for grounding (docs/results/compare.md): one object
        # performs two look-alike pairs (e.g. grows ... shrinks ... rises ... falls) and every query names one of
        # them, so neither "when is it visible" nor "when does it move" finds the span; each action has exactly one
        # verb lemma, so a model that knows the action can name it and the inversion rewards can reach 100%.
        presets["lookalike"] = {
            **presets["tiny"],
            "clock": "tint",
            "clock_step": 8.0,
            "time_grid": 1.0,
            "duration": (18.0, 24.0),
            "event_length": (2.0, 3.0),
            "min_gap": 1.0,
            "events_per_object": (4, 4),
            "distractors": (0, 0),
            "actions": tuple(a for pair in PAIRED_ACTIONS for a in pair),
            "opposite_prob": 1.0,
            "absent_start_prob": 0.0,
            "two_verb_prob": 0.0,
            "wording": "one_lemma",
            "queries": "paired",
            "split": (0.7, 0.1, 0.2),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SynthConfig fields {unknown}; known: {sorted(known)}")
        # JSON/YAML give lists; the dataclass is frozen and hashable with tuples.
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

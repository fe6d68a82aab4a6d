"""Plan one synthetic video as data (no pixels): its objects, what each does and when, and the queries.

Every object has a distinct (colour, shape), performs each action at most once, and its actions never overlap
in time, so every query names exactly one span. Two actions of one object never share a direction of motion
(leaving to the left and moving left, entering from the top and falling), so "moves to the left" cannot match the
exit. With probability ``opposite_prob`` an object that performed one member of a pair later performs the
other, which makes the direction of change the only cue that separates the two spans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from invert4tvg.data.synthetic.actions import ACTIONS, Frame, ObjectState
from invert4tvg.data.synthetic.language import single_query, two_verb_query
from invert4tvg.data.synthetic.synth_config import SynthConfig

TIME_DECIMALS = 1  # labels in tenths of a second, like Charades-STA


@dataclass
class Event:
    action: str
    start: float
    end: float
    params: dict[str, Any]
    before: ObjectState  # state when the action starts

    @property
    def length(self) -> float:
        return self.end - self.start


@dataclass
class SceneObject:
    colour: str
    shape: str
    initial: ObjectState
    events: list[Event] = field(default_factory=list)

    def state_at(self, t: float) -> ObjectState:
        state = self.initial
        for event in self.events:
            if t < event.start:
                return event.before
            if t < event.end:
                return ACTIONS[event.action].at(event.before, event.params, t - event.start, event.length)
            state = ACTIONS[event.action].final(event.before, event.params)
        return state


@dataclass
class Query:
    sentence: str
    start: float
    end: float
    object: int
    actions: list[str]


@dataclass
class Scene:
    video_id: str
    duration: float
    num_frames: int
    objects: list[SceneObject]  # drawn in list order: the main object (index 0) is drawn last, on top
    queries: list[Query]
    background_seed: int


def _motion(action: str, params: dict[str, Any]) -> str | None:
    """Screen direction an action moves the object in, if any (see the module docstring)."""
    if action in ("move_left", "move_right"):
        return action.removeprefix("move_")
    if action in ("rise", "fall"):
        return {"rise": "top", "fall": "bottom"}[action]
    if action == "leave":
        return params["side"]
    if action == "enter":
        return {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[params["side"]]
    return None


# Entrances and exits are possible from almost any state, "close" only after "open": without these weights the
# former would be drawn about three times as often as the rest and "close" a third as often.
ACTION_WEIGHTS = {"appear": 0.5, "enter": 0.5, "disappear": 0.6, "leave": 0.6, "close": 3.0}


def _weighted_order(names: list[str], rng: np.random.Generator) -> list[str]:
    """``names`` in a random order where heavier actions tend to come first (Efraimidis-Spirakis keys)."""
    weights = np.array([ACTION_WEIGHTS.get(n, 1.0) for n in names])
    keys = rng.random(len(names)) ** (1.0 / weights)
    return [names[i] for i in np.argsort(-keys, kind="stable")]


def _schedule(n: int, duration: float, cfg: SynthConfig, rng: np.random.Generator) -> tuple[list, int | None]:
    """Non-overlapping spans for ``n`` actions, and which consecutive pair (if any) is kept close together."""
    lengths = [float(rng.uniform(*cfg.event_length)) for _ in range(n)]
    available = duration - 2 * cfg.edge_margin
    while lengths and sum(lengths) + (len(lengths) - 1) * cfg.min_gap > available:
        lengths.pop()
    if not lengths:
        return [], None
    slack = available - sum(lengths) - (len(lengths) - 1) * cfg.min_gap
    shares = rng.dirichlet(np.ones(len(lengths) + 1)) * slack
    close = None
    if len(lengths) >= 2 and rng.random() < cfg.two_verb_prob:
        close = int(rng.integers(len(lengths) - 1))
        shares[0] += shares[
            close + 1
        ]  # that gap keeps only the minimum; its share moves before the first action
        shares[close + 1] = 0.0
    spans, t = [], cfg.edge_margin + shares[0]
    for i, length in enumerate(lengths):
        spans.append((t, t + length))
        t += length + cfg.min_gap + shares[i + 1]
    return spans, close


def _plan_actions(
    obj: SceneObject, n: int, duration: float, cfg: SynthConfig, frame: Frame, rng: np.random.Generator
) -> int | None:
    spans, close = _schedule(n, duration, cfg, rng)
    state, used, motions, pending = obj.initial, set(), set(), []
    for start, end in spans:
        if cfg.time_grid:
            start = round(start / cfg.time_grid) * cfg.time_grid
            end = max(round(end / cfg.time_grid) * cfg.time_grid, start + cfg.time_grid)
        start, end = round(start, TIME_DECIMALS), round(end, TIME_DECIMALS)
        candidates = _weighted_order([a for a in cfg.actions if a not in used], rng)
        if pending and rng.random() < cfg.opposite_prob:
            candidates = [a for a in pending if a in candidates] + [a for a in candidates if a not in pending]
        for name in candidates:
            params = ACTIONS[name].plan(state, obj.shape, rng, frame)
            if params is None or (_motion(name, params) in motions and _motion(name, params) is not None):
                continue
            break
        else:
            break  # nothing can happen from this state; the object stays idle from here on
        params["length"] = end - start
        obj.events.append(Event(name, start, end, params, state))
        state = ACTIONS[name].final(state, params)
        used.add(name)
        motions.add(_motion(name, params))
        opposite = ACTIONS[name].opposite
        if opposite in pending:
            pending.remove(opposite)
        elif opposite is not None and opposite not in used:
            pending.append(opposite)
    return close if close is not None and close + 1 < len(obj.events) else None


def plan_scene(index: int, seed: int, cfg: SynthConfig) -> Scene:
    """The scene of video ``index``: a pure function of ``(seed, index, cfg)``."""
    rng = np.random.default_rng([seed, index])
    frame = Frame(cfg.width, cfg.height)
    seconds = float(rng.uniform(*cfg.duration))
    if cfg.time_grid:
        seconds = round(seconds / cfg.time_grid) * cfg.time_grid
    num_frames = max(2, round(seconds * cfg.fps))
    duration = num_frames / cfg.fps
    n_distractors = int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))
    combos = [(c, s) for c in cfg.colours for s in cfg.shapes]
    picks = rng.choice(len(combos), size=1 + n_distractors, replace=False)

    objects: list[SceneObject] = []
    closes: list[int | None] = []
    for k, pick in enumerate(picks):
        colour, shape = combos[int(pick)]
        size = float(rng.uniform(*cfg.object_size)) * frame.side
        r = size / 2 + 1
        x, y = float(rng.uniform(r, frame.width - r)), float(rng.uniform(r, frame.height - r))
        entrances = [a for a in ("appear", "enter") if a in cfg.actions]
        absent = bool(entrances) and rng.random() < cfg.absent_start_prob
        obj = SceneObject(colour, shape, ObjectState(x, y, size, alpha=0.0 if absent else 1.0))
        lo, hi = cfg.events_per_object if k == 0 else cfg.distractor_events
        n_events = int(rng.integers(lo, hi + 1))
        if absent and n_events == 0:
            obj.initial = ObjectState(x, y, size)
        closes.append(_plan_actions(obj, n_events, duration, cfg, frame, rng) if n_events else None)
        objects.append(obj)

    queries: list[Query] = []
    for k, obj in enumerate(objects):
        done = {e.action for e in obj.events}
        for event in obj.events:
            if cfg.queries == "paired" and ACTIONS[event.action].opposite not in done:
                continue  # no look-alike span of the same object to tell this one apart from
            text = single_query(obj.colour, obj.shape, event.action, rng, cfg.past_tense_prob, cfg.wording)
            queries.append(Query(text, event.start, event.end, k, [event.action]))
        if closes[k] is not None:
            a, b = obj.events[closes[k]], obj.events[closes[k] + 1]
            if (
                cfg.queries == "paired"
                and not {ACTIONS[a.action].opposite, ACTIONS[b.action].opposite} <= done
            ):
                continue
            text = two_verb_query(
                obj.colour, obj.shape, a.action, b.action, rng, cfg.past_tense_prob, cfg.wording
            )
            queries.append(Query(text, a.start, b.end, k, [a.action, b.action]))
    queries.sort(key=lambda q: (q.start, q.end))
    return Scene(
        video_id=f"synth-{index:05d}",
        duration=duration,
        num_frames=num_frames,
        objects=objects[::-1],  # draw the main object last
        queries=[_reindex(q, len(objects)) for q in queries],
        background_seed=int(rng.integers(2**31)),
    )


def _reindex(q: Query, n: int) -> Query:
    q.object = n - 1 - q.object  # indices follow the drawing order of Scene.objects
    return q

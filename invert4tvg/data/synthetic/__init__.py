"""A synthetic temporal grounding benchmark that runs on a laptop: coloured shapes performing actions over
known spans, written as real H.264 videos with annotations in the TVG JSON dict format.

Grounding really requires understanding the action: many videos show the same object performing both members of
a pair (grows ... later shrinks), which look alike in any single frame. See docs/data.md.
"""

from invert4tvg.data.synthetic.actions import ACTIONS, PAIRS
from invert4tvg.data.synthetic.generate import GENERATOR_VERSION, assign_splits, generate_benchmark
from invert4tvg.data.synthetic.language import PHRASES, vocabulary
from invert4tvg.data.synthetic.scene import Scene, plan_scene
from invert4tvg.data.synthetic.synth_config import ACTION_NAMES, COLOURS, SHAPES, SynthConfig

__all__ = [
    "ACTIONS",
    "ACTION_NAMES",
    "COLOURS",
    "GENERATOR_VERSION",
    "PAIRS",
    "PHRASES",
    "SHAPES",
    "Scene",
    "SynthConfig",
    "assign_splits",
    "generate_benchmark",
    "plan_scene",
    "vocabulary",
]

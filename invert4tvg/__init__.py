"""invert4tvg: reinforcement-learning post-training for temporal video grounding.

GRPO for Qwen2.5-VL with the Invert4TVG inversion tasks (verb completion, action recognition, video description),
verifiable rewards, a synthetic benchmark, evaluation and reports.
"""

from invert4tvg import _compat  # noqa: F401  (must run before anything imports torchvision)

__version__ = "0.1.0"

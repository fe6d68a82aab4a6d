"""``DataArguments`` (the dataset, its splits, frame sampling) and ``TaskArguments`` (which task a step trains, the
inversion prompts)."""

from __future__ import annotations

from dataclasses import dataclass, field

from invert4tvg.data.frames import VideoSampling
from rewards.base import INVERSION_TASKS
from rewards.nlp.lexicon import ASPECTUAL_VERBS


@dataclass
class DataArguments:
    # Parameters that control the dataset and its splits (docs/data.md)
    dataset_format: str = field(
        default="tvg-json",
        metadata={"help": "charades-sta | tvg-json | activitynet | qvhighlights | time-r1"},
    )
    train_annotations: str | None = field(
        default=None, metadata={"help": "Annotation file of the training split."}
    )
    val_annotations: str | None = field(
        default=None, metadata={"help": "Validation split: evaluated every eval_steps (and at step 0)."}
    )
    test_annotations: str | None = field(
        default=None, metadata={"help": "Test split: evaluated into OUTPUT_DIR/eval when training ends."}
    )
    durations: str | None = field(
        default=None, metadata={"help": "Charades csv or a duration map (charades-sta)."}
    )
    video_dir: str | None = field(
        default=None, metadata={"help": "Directory the annotations' video names are relative to."}
    )
    dataset_source: str | None = field(default=None, metadata={"help": "Source label of the records."})

    # Parameters that control bad input
    on_bad_record: str = field(
        default="raise", metadata={"help": "raise (fail fast) | skip (count and go on)"}
    )
    span_overshoot: str = field(
        default="drop",
        metadata={
            "help": "Training spans that leave the video: drop (clip up to 1 s over, reject more; counted), clip "
            "(clip all to [0, duration]; counted) or keep. val/test splits always keep the ground truth as "
            "published and count overshoots (docs/data.md)."
        },
    )
    max_bad_video_fraction: float = field(
        default=0.05,
        metadata={"help": "Stop training when more than this fraction of videos failed to decode."},
    )

    # Parameters that control frame sampling (qwen-vl-utils' names)
    video_fps: float = field(
        default=2.0, metadata={"help": "Frames sampled per second of video (the paper: 2)."}
    )
    video_min_frames: int = field(default=4, metadata={"help": "Fewest frames sampled from a video."})
    video_max_frames: int = field(default=768, metadata={"help": "Most frames sampled from a video."})
    video_total_pixels: int = field(
        default=3584 * 28 * 28,
        metadata={
            "help": "Pixel budget of all frames of a video together (qwen-vl-utils' VIDEO_TOTAL_PIXELS)."
        },
    )
    video_min_pixels: int = field(default=16 * 28 * 28, metadata={"help": "Fewest pixels per frame."})
    video_max_pixels: int = field(default=768 * 28 * 28, metadata={"help": "Most pixels per frame."})

    # Parameters that control the frame cache
    frame_cache_dir: str | None = field(default=None, metadata={"help": "Disk cache of decoded frames."})
    frame_cache_gb: float = field(
        default=20.0,
        metadata={"help": "Size limit of frame_cache_dir (least recently used entries go first)."},
    )

    def sampling(self) -> VideoSampling:
        return VideoSampling(
            fps=self.video_fps,
            min_frames=self.video_min_frames,
            max_frames=self.video_max_frames,
            total_pixels=self.video_total_pixels,
            min_pixels=self.video_min_pixels,
            max_pixels=self.video_max_pixels,
        )


@dataclass
class TaskArguments:
    # Parameters that control which task a step trains
    tvg_probability: float = field(default=0.8, metadata={"help": "p: chance an iteration trains grounding."})
    invert_tasks: list[str] = field(
        default_factory=lambda: list(INVERSION_TASKS),
        metadata={"help": "Inversion tasks drawn when an iteration does not train grounding: vc, ar, vd."},
    )
    invert_task_weights: list[float] | None = field(
        default=None, metadata={"help": "Relative odds of invert_tasks (None: uniform)."}
    )
    task_sampling: str = field(default="per_iteration", metadata={"help": "per_iteration | per_sample"})

    # Parameters that control the inversion prompts
    verb_mask: str = field(
        default="all", metadata={"help": "VC masks all verbs (all) or one sampled verb (one)."}
    )
    aspectual_verbs: list[str] = field(
        default_factory=lambda: sorted(ASPECTUAL_VERBS),
        metadata={
            "help": "Verb lemmas left out of the VC mask and of the AR/VD targets when another verb follows them "
            '("person begins sneezing" masks and asks for "sneeze" only). [] keeps every verb, as the public code.'
        },
    )
    prompt_templates: str | None = field(
        default=None, metadata={"help": "YAML file overriding prompt templates."}
    )

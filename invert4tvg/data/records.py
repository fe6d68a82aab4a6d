"""One record type for every grounding dataset: a (video, query, span) triple, times in seconds."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import datasets


@dataclass(frozen=True)
class GroundingRecord:
    """One grounding sample. ``id`` is unique within a dataset; ``video`` is a file path ("" when unresolved)."""

    id: str
    video_id: str
    video: str
    duration: float
    start: float
    end: float
    query: str
    source: str


RECORD_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "video_id": datasets.Value("string"),
        "video": datasets.Value("string"),
        "duration": datasets.Value("float64"),
        "start": datasets.Value("float64"),
        "end": datasets.Value("float64"),
        "query": datasets.Value("string"),
        "source": datasets.Value("string"),
    }
)


def to_dataset(records: Iterable[GroundingRecord]) -> datasets.Dataset:
    rows = [asdict(r) for r in records]
    return datasets.Dataset.from_list(rows, features=RECORD_FEATURES)

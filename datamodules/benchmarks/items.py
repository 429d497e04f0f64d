"""The one item type every benchmark reader returns, whatever the benchmark's own annotation format."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EvalItem:
    """One question about one video (or frame folder), multiple choice or open-ended.

    Attributes:
        id: unique id within the benchmark (the benchmark's own question id where it has one).
        video: absolute path of the video file, or of a folder of frames (``frame_fps`` then says their rate).
        question: the question text as the benchmark gives it (no options, no prompt around it).
        options: the option texts without letters; empty for open-ended questions.
        answer: multiple choice: index of the right option (-1 when the benchmark hides it);
            open-ended: the reference answer ("" when hidden).
        category: what per-category accuracy groups by (MVBench task, Video-MME task type, VNBench type,
            open-ended answer type); "" when the benchmark has none.
        group: items scored together (VNBench: the 4 circular tries share one group); defaults to ``id``.
        start: window start in seconds (MVBench's start/end tasks), or None for the whole video.
        end: window end in seconds, or None.
        frame_fps: frames per second of a frame folder (MVBench episodic reasoning: 3), None for video files.
        subtitles: path of the video's ``.srt`` subtitle file (Video-MME), or None.
        extra: benchmark-specific fields kept for aggregation and submission files (Video-MME ``duration``,
            ``domain``, ``sub_category``; Perception Test ``video_id``, ``area``; EgoSchema ``q_uid``; ...).
    """

    id: str
    video: str
    question: str
    options: list[str]
    answer: int | str
    category: str = ""
    group: str = ""
    start: float | None = None
    end: float | None = None
    frame_fps: float | None = None
    subtitles: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.group = self.group or self.id

    @property
    def multiple_choice(self) -> bool:
        return len(self.options) > 0

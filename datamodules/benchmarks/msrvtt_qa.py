"""MSRVTT-QA: open-ended questions in MSVD-QA's ``test_qa.json`` format, over the MSR-VTT videos."""

from __future__ import annotations

from datamodules.benchmarks.msvd_qa import MSVDQA


class MSRVTTQA(MSVDQA):
    """MSRVTT-QA (open-ended; ``test_qa.json`` as MSVD-QA), videos ``<video_root>/video<id>.*`` (or ``<id>.*``);
    ``video_id`` may be ``7010`` or ``"video7010"``.

    Args:
        root: MSRVTT-QA folder.
        annotation: the question file, relative to ``root``.
        video_root: the videos' folder, relative to ``root`` or absolute (B-VLLM's ``videos``).
        short_answer: append lmms-eval's "Answer the question using a single word or phrase.".
        judge: the Video-ChatGPT judge (``url``, ``model``, ...); None: offline metrics only.
    """

    name = "msrvtt_qa"

    def video_stems(self, video_id: str) -> list[str]:
        number = video_id.removeprefix("video")
        return [f"video{number}", number]

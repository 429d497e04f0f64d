"""SubRip (.srt) subtitles: a tolerant standard-library parser and the lines shown at the sampled frames.

Video-MME prepends to its with-subtitles prompt the subtitle line active at each sampled frame, one line per frame
(VideoLLaMA2's ``inference_video_mcqa_videomme.py`` reads them with pysubs2). The parser
accepts what real .srt files contain besides the textbook layout: a UTF-8 byte-order mark, CRLF or CR line ends,
missing index lines, missing blank lines between cues, ``.`` instead of ``,`` before the milliseconds,
coordinates after the timing, HTML-like tags (``<i>``, ``<font color=...>``), ASS override blocks (``{\\an8}``)
and pysubs2's ``\\N`` line breaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_TIME = r"(\d+):(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_MARKUP = re.compile(r"<[^>]*>|\{\\[^}]*\}")


@dataclass(frozen=True)
class Cue:
    """One subtitle, from ``start`` to ``end`` in seconds (:func:`subtitles_at` shows it strictly between them)."""

    start: float
    end: float
    text: str


def _seconds(hours: str, minutes: str, seconds: str, fraction: str | None) -> float:
    """``("0", "01", "02", "5")`` -> 62.5: the fraction is a decimal fraction (",5" is half a second)."""
    return (int(hours) * 3600 + int(minutes) * 60 + int(seconds)
            + (int(fraction.ljust(3, "0")) / 1000 if fraction else 0.0))


def _clean(line: str) -> str:
    """A text line without markup, with ``\\N`` breaks as spaces and runs of spaces collapsed."""
    return " ".join(_MARKUP.sub("", line.replace("\\N", " ").replace("\\n", " ")).split())


def parse_srt(text: str) -> list[Cue]:
    """The cues of an .srt document, in file order; their lines joined by spaces, empty cues kept (as "").

    A cue's text is every line between its timing line and the next one, except blank lines and a trailing
    index line (digits only) of the next cue. A cue whose text ends in a bare number with the next cue's
    index missing therefore loses that number: the format cannot tell them apart.
    """
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    timings = [(i, m) for i, m in ((i, _TIMING.match(line)) for i, line in enumerate(lines)) if m]
    cues = []
    for n, (i, m) in enumerate(timings):
        stop = timings[n + 1][0] if n + 1 < len(timings) else len(lines)
        body = [line.strip() for line in lines[i + 1:stop]]
        while body and not body[-1]:
            body.pop()
        if n + 1 < len(timings) and body and body[-1].isdigit():  # the next cue's index line
            body.pop()
        words = [_clean(line) for line in body if line]
        cues.append(Cue(_seconds(*m.groups()[:4]), _seconds(*m.groups()[4:]), " ".join(w for w in words if w)))
    return cues


def read_srt(path: str | Path) -> list[Cue]:
    """:func:`parse_srt` of a file; undecodable bytes become U+FFFD instead of failing the item."""
    return parse_srt(Path(path).read_text(encoding="utf-8", errors="replace"))


def subtitles_at(cues: list[Cue], times, dedupe: bool = False) -> list[str]:
    """The subtitle line shown at each time (seconds), for the frames a model sees, as VideoLLaMA2's
    ``inference_video_mcqa_videomme.py`` selects them: one line per frame, in frame order.

    A time shows the first cue with ``start < t < end`` (the reference's test, strict at both ends); times showing
    no cue, or an empty one, give no line. A cue spanning several frames repeats, as in the reference;
    ``dedupe=True`` keeps one of each run of equal consecutive lines (not the reference's prompt).

    Args:
        cues: from :func:`parse_srt` / :func:`read_srt`.
        times: frame timestamps in seconds (a list or array, in the order the frames are shown).
        dedupe: drop a line equal to the line before it.
    """
    lines: list[str] = []
    for t in np.asarray(times, dtype=np.float64).reshape(-1).tolist():
        text = next((c.text for c in cues if c.start < t < c.end), "")
        if text and not (dedupe and lines and lines[-1] == text):
            lines.append(text)
    return lines

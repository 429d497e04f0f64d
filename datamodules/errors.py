"""What can be wrong with a training sample, and how it is reported.

A :class:`SampleError` is raised while loading one entry. In training (``strict=False``) the dataset counts it
under its ``reason`` and serves a replacement; with ``strict=True`` it becomes a :class:`DataError` whose message
names the file, the entry and the flag to change. ``lit_bvllm scan`` lists every entry with its reason.
"""

from __future__ import annotations

REASONS = (
    "bad_entry",          # not a JSON object, unparseable JSONL line, both/neither media keys wrong, bad window
    "bad_conversation",   # conversations missing, not alternating human/gpt, empty values, no answer
    "missing_tag",        # media entry whose first human turn has no <video>/<image> tag
    "extra_tag",          # more than one tag, a tag outside the first human turn, or a tag on a text-only entry
    "path_escape",        # media path resolves outside the data root
    "missing_file",       # media file does not exist
    "empty_video",        # zero bytes or zero frames
    "decode_error",       # corrupt or truncated media
    "too_long",           # the prompt alone exceeds max_length once the visual-token budget is reserved
    "bad_text",           # text that is not valid Unicode (a lone surrogate such as "\\udcff"): it cannot be tokenized
    "bad_image",          # an image declaring more pixels than datamodules.video.MAX_IMAGE_PIXELS
                          # (a decompression bomb)
    "bad_container",      # a video header outside datamodules.video's limits (duration, frames, fps, size):
                          # never decoded
    "crashed",            # decoding killed or hung its process (training: the decoder process; scan: its worker), or
                          # a scan check raised an unexpected error
)


class SampleError(Exception):
    """One entry cannot be used. ``reason`` is one of :data:`REASONS`; ``field`` names the offending key."""

    def __init__(self, reason: str, field: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(f"{reason} in field '{field}': {detail}")
        self.reason, self.field, self.detail = reason, field, detail


class DataError(RuntimeError):
    """A data problem that stops the run (strict mode, or a share of bad entries above --data.max_bad_fraction)."""


STRICT_HINT = (
    "Run `lit_bvllm scan` to list every bad entry (its report works as --data.blocklist), "
    "or set --data.strict=false to skip and count bad samples."
)


def describe(err: SampleError, file: str, index: int, entry_id: str | None) -> str:
    """Where and what: ``file: entry 4821, id 'v_1': decode_error in field 'video': ...``."""
    eid = f", id '{entry_id}'" if entry_id is not None else ""
    return f"{file}: entry {index}{eid}: {err.reason} in field '{err.field}': {err.detail}"


def row_id(entry_id: str | None, file: str, index: int) -> str:
    """The id a report row names an entry by: its own ``id``, else ``<file>#<index>``."""
    return f"{file}#{index}" if entry_id is None else entry_id

"""Frame sampling and decoding with decord (the default) or torchcodec (``--data.decoder torchcodec``).

Two sampling modes, both inside an optional ``[start, end]`` window (seconds):

- ``fps``: ``fps`` frames per second, each taken in the middle of its interval (at 1 fps: t = 0.5 s, 1.5 s, ...),
  so a D-second video gives one frame per second of its duration; when that exceeds ``max_frames`` the frames
  are thinned uniformly over the whole window (never truncated to the first ``max_frames``, the VideoLLaMA2 bug);
- ``uniform``: ``num_frames`` frames at the midpoints of equal segments of the window (VideoLLaMA2's convention);
  a window holding fewer frames than that gives each of its frames once.

A reader is opened per call with one thread and dropped after it (decord's advice against worker deadlocks).
Both decoders index the file's frames exactly (decord by its index, torchcodec with ``seek_mode="exact"``) and
return the same frames for the same times: bit-identical on the synthetic set (``tests/test_video.py``); which is
faster is measured in ``benchmarks/RESULTS.md`` ("Streaming at scale").
Before decord sees a file, its header is read with PyAV and checked against the limits below
(:func:`check_container`): decord sizes its frame index from the declared duration and frame rate, and a hostile
header (a 2 KB Matroska file whose frames are 1e10 s apart) makes it abort the whole process (``std::bad_alloc``),
which no ``try`` can catch. Images are checked against :data:`MAX_IMAGE_PIXELS` before they are decoded.
A folder of frame images (MVBench's episodic reasoning: TVQA frames at 3 fps) is sampled the same way, frame
``i`` of the naturally sorted image files standing at time ``i / frame_fps``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from datamodules.errors import SampleError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")
DECODERS = ("decord", "torchcodec")
FRAME_FOLDER_FPS = 3.0  # MVBench's TVQA frames (tvqa/frames_fps3_hq)

# What a video header may declare (read with PyAV before decord opens the file); beyond it: ``bad_container``.
MAX_DURATION_S = 24 * 3600.0  # a day: above any training or benchmark video (long egocentric recordings run hours)
MAX_FPS = 1000.0  # high-speed cameras record up to about 1000 fps; more is a broken time base
MAX_FRAMES = 10_000_000  # frames decord indexes (a day at 115 fps); its index takes a few bytes per frame
MAX_SIDE = 8192  # pixels per side: DCI 8K is 8192 x 4320
MAX_IMAGE_PIXELS = 89_478_485  # PIL's own Image.MAX_IMAGE_PIXELS (it warns above, refuses twice that): ``bad_image``


def is_image(media: str | None, path: str) -> bool:
    """Whether an entry's media is read as one image: an ``image`` entry, or a ``video`` entry naming an image."""
    return media == "image" or path.lower().endswith(IMAGE_SUFFIXES)


def no_frames() -> np.ndarray:
    """The frames of an entry without media: ``(0, 1, 1, 3)`` uint8."""
    return np.zeros((0, 1, 1, 3), np.uint8)


@dataclass(frozen=True)
class FrameSampling:
    """Which frames of a video are decoded, as one value the data modules build from their ``--data.frame_mode``,
    ``fps``, ``num_frames`` and ``max_frames`` flags and hand to the readers.

    Attributes:
        mode: ``fps`` (``fps`` frames per second, mid-interval; at most ``max_frames``, thinned uniformly) or
            ``uniform`` (``num_frames`` frames).
    """

    mode: Literal["fps", "uniform"] = "fps"
    fps: float = 1.0
    num_frames: int = 16
    max_frames: int | None = None

    def __post_init__(self):
        if self.mode not in ("fps", "uniform"):
            raise ValueError(f"--data.frame_mode must be 'fps' or 'uniform', got {self.mode!r}")
        if self.mode == "fps" and not self.fps > 0:
            raise ValueError(f"--data.fps must be > 0, got {self.fps}")
        if self.num_frames < 1 or (self.max_frames is not None and self.max_frames < 1):
            raise ValueError(f"--data.num_frames and --data.max_frames must be >= 1, got {self.num_frames} and "
                             f"{self.max_frames}")

    def times(self, duration: float, start: float | None = None, end: float | None = None) -> np.ndarray:
        """The timestamps to decode from a video of ``duration`` seconds (:func:`sample_times`)."""
        return sample_times(duration, self.mode, self.fps, self.num_frames, self.max_frames, start, end)


def sample_times(
    duration: float,
    mode: Literal["fps", "uniform"] = "fps",
    fps: float = 1.0,
    num_frames: int = 16,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Timestamps (seconds, float64, increasing) to decode from a video of ``duration`` seconds."""
    t0 = max(0.0, start or 0.0)
    t1 = duration if end is None else min(end, duration)
    if t1 <= t0:
        raise SampleError("bad_entry", "start/end", f"window [{start}, {end}] is empty for a {duration:.2f} s video")
    span = t1 - t0
    if mode == "fps":
        if fps <= 0:
            raise ValueError(f"--data.fps must be > 0, got {fps}")
        count = max(1, math.ceil(span * fps - 0.5 - 1e-9))  # k with t0 + (k + 0.5)/fps < t1
        times = t0 + (np.arange(count) + 0.5) / fps
        if max_frames is not None and count > max_frames:
            times = times[np.linspace(0, count - 1, max_frames).round().astype(np.int64)]
        return times
    if mode == "uniform":
        return t0 + (np.arange(num_frames) + 0.5) * span / num_frames
    raise ValueError(f"--data.frame_mode must be 'fps' or 'uniform', got '{mode}'")


def times_to_indices(times: np.ndarray, native_fps: float, num_frames: int) -> np.ndarray:
    """Frame index shown at each time; repeated indices collapse, so every returned frame is distinct."""
    idx = np.clip(np.floor(times * native_fps + 1e-6).astype(np.int64), 0, num_frames - 1)
    return np.unique(idx)


def container_problem(width: int, height: int, fps: float, frames: int, duration: float) -> str | None:
    """What in a declared video header exceeds the module's limits, or None.

    Args:
        width, height: frame size in pixels.
        fps: average frame rate (what decord's ``get_avg_fps`` returns).
        frames: declared frame count, or ``fps * duration`` when the container declares none (decord's estimate).
        duration: declared duration in seconds.
    """
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        return f"declares {width}x{height} pixels (limit {MAX_SIDE} per side)"
    if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
        return f"declares {fps:g} frames per second (limit {MAX_FPS:g})"
    if not (math.isfinite(duration) and duration <= MAX_DURATION_S):
        return f"declares a duration of {duration:.4g} s (limit {MAX_DURATION_S:g} s)"
    if frames > MAX_FRAMES:
        return f"declares {frames:.4g} frames (limit {MAX_FRAMES:g})"
    return None


def check_container(path: str) -> None:
    """Read the header of video ``path`` with PyAV; raise ``bad_container`` when it exceeds the limits.

    Only the header is parsed, and the best video stream judged (the one decord opens): about 0.6 ms for a short
    synthetic mp4, against about 27 ms to decode its frames. A file PyAV cannot open is a ``decode_error``.
    """
    import av

    try:
        with av.open(path, metadata_errors="ignore") as container:
            stream = container.streams.best("video")
            if stream is None:
                raise SampleError("decode_error", "video", f"'{path}' holds no video stream")
            ctx = stream.codec_context
            fps = float(stream.average_rate) if stream.average_rate else 0.0
            durations = [0.0]
            if container.duration is not None:
                durations.append(container.duration / av.time_base)
            if stream.duration is not None and stream.time_base is not None:
                durations.append(float(stream.duration * stream.time_base))
            duration = max(durations)
            frames = stream.frames if stream.frames > 0 else fps * duration
            problem = container_problem(ctx.width, ctx.height, fps, frames, duration)
    except SampleError:
        raise
    except Exception as e:  # PyAV's FFmpegError family, or anything else its parser raises
        raise SampleError("decode_error", "video",
                          f"'{path}' cannot be opened ({type(e).__name__}: {str(e)[:200]})") from None
    if problem is not None:
        raise SampleError("bad_container", "video", f"'{path}' {problem}: a broken or hostile header, not decoded "
                                                    "(limits: datamodules.video.MAX_*)")


def _open(path: str, decoder: str = "decord"):
    """A reader with its frame count and fps, or :class:`SampleError` (missing / empty / hostile / undecodable).
    The header passes :func:`check_container` before the decoder opens the file."""
    if decoder not in DECODERS:
        raise ValueError(f"--data.decoder must be one of {DECODERS}, got {decoder!r}")
    if not os.path.isfile(path):
        raise SampleError("missing_file", "video", f"'{path}' does not exist")
    if os.path.getsize(path) == 0:
        raise SampleError("empty_video", "video", f"'{path}' is 0 bytes")
    check_container(path)
    try:
        if decoder == "decord":
            import decord

            vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
            total, native_fps = len(vr), float(vr.get_avg_fps())
        else:
            from torchcodec.decoders import VideoDecoder

            vr = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=1, seek_mode="exact")
            total, native_fps = vr.metadata.num_frames or 0, float(vr.metadata.average_fps or 0.0)
    except Exception as e:  # RuntimeError / DECORDError / ValueError for corrupt and truncated files
        raise SampleError("decode_error", "video",
                          f"'{path}' cannot be opened ({type(e).__name__}: {str(e)[:200]})") from None
    if total == 0 or native_fps <= 0:
        raise SampleError("empty_video", "video", f"'{path}' has {total} frames at {native_fps} fps")
    return vr, total, native_fps


def frames_at(reader, indices: list[int]) -> np.ndarray:
    """Frames ``indices`` of an open decord or torchcodec reader, ``(T, H, W, 3)`` uint8."""
    if hasattr(reader, "get_batch"):  # decord
        return reader.get_batch(indices).asnumpy()
    return reader.get_frames_at(indices).data.numpy()


def read_video(
    path: str,
    sampling: FrameSampling = FrameSampling(),
    start: float | None = None,
    end: float | None = None,
    frame_fps: float | None = None,
    decoder: str = "decord",
) -> tuple[np.ndarray, np.ndarray, float]:
    """Decode the frames ``sampling`` picks of ``path``, a video file or a folder of frames (see
    :func:`read_frame_folder`), within ``[start, end]`` seconds when given.

    Args:
        frame_fps: frames per second of a frame folder (3.0 when None, MVBench's TVQA frames); unused for files.
        decoder: ``decord`` or ``torchcodec`` (:data:`DECODERS`), for video files.
    Returns:
        frames ``(T, H, W, 3)`` uint8 RGB, their timestamps ``(T,)`` in seconds, and the video's duration.
    Raises:
        SampleError: ``missing_file``, ``empty_video``, ``bad_container``, ``decode_error`` (or ``bad_entry`` for an
        empty window; ``bad_image`` for a frame folder's oversized image).
    """
    if os.path.isdir(path):
        return read_frame_folder(path, sampling, start, end, FRAME_FOLDER_FPS if frame_fps is None else frame_fps)
    vr, total, native_fps = _open(path, decoder)
    duration = total / native_fps
    idx = times_to_indices(sampling.times(duration, start, end), native_fps, total)
    try:
        frames = frames_at(vr, idx.tolist())
    except Exception as e:  # a header that opens over a body that does not decode
        raise SampleError("decode_error", "video",
                          f"'{path}' cannot be decoded ({type(e).__name__}: {str(e)[:200]})") from None
    finally:
        del vr
    return frames, idx / native_fps, duration


def natural_key(name: str) -> list:
    """Sort key that orders digit runs by value: ``frame2.jpg`` before ``frame10.jpg``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def read_frame_folder(
    path: str,
    sampling: FrameSampling = FrameSampling(),
    start: float | None = None,
    end: float | None = None,
    frame_fps: float = FRAME_FOLDER_FPS,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The sampled frames of a folder of images, as :func:`read_video` gives them for a video file.

    The image files (:data:`IMAGE_SUFFIXES`, naturally sorted, other files ignored) are the frames of a video of
    ``len(files) / frame_fps`` seconds, file ``i`` (from 0) showing time ``i / frame_fps``. (VideoLLaMA2 opens
    ``{k:05d}.jpg`` from k = 1 at ``round(t * 3)``: the same frames up to one step at the window edges.)

    Returns:
        frames ``(T, H, W, 3)`` uint8 RGB, their timestamps ``(T,)`` in seconds, and the folder's duration.
    Raises:
        SampleError: ``missing_file`` (no such folder), ``empty_video`` (no image in it), ``decode_error``
        (an unreadable image, or frames of different sizes), ``bad_entry`` (an empty window).
    """
    if frame_fps <= 0:
        raise ValueError(f"frame_fps must be > 0, got {frame_fps}")
    if not os.path.isdir(path):
        raise SampleError("missing_file", "video", f"frame folder '{path}' does not exist")
    files = sorted((f for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES)), key=natural_key)
    if not files:
        raise SampleError("empty_video", "video", f"frame folder '{path}' holds no {'/'.join(IMAGE_SUFFIXES)} image")
    duration = len(files) / frame_fps
    idx = times_to_indices(sampling.times(duration, start, end), frame_fps, len(files))
    frames = [read_image(os.path.join(path, files[i]), "video")[0] for i in idx]
    if len({f.shape for f in frames}) > 1:
        raise SampleError("decode_error", "video",
                          f"frames of '{path}' differ in size: {sorted({f.shape for f in frames})}")
    return np.stack(frames), idx / frame_fps, duration  # (T, H, W, 3)


def read_image(path: str, field: str = "image") -> np.ndarray:
    """An image as a 1-frame video ``(1, H, W, 3)`` uint8 RGB.

    Raises:
        SampleError (in ``field``): ``missing_file``, ``empty_video`` (0 bytes), ``bad_image`` (more pixels than
        :data:`MAX_IMAGE_PIXELS`, judged from the header before decoding), ``decode_error``.
    """
    import warnings

    from PIL import Image

    if not os.path.isfile(path):
        raise SampleError("missing_file", field, f"'{path}' does not exist")
    if os.path.getsize(path) == 0:
        raise SampleError("empty_video", field, f"'{path}' is 0 bytes")
    too_big = f"'{path}' declares more than {MAX_IMAGE_PIXELS} pixels (datamodules.video.MAX_IMAGE_PIXELS)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with its file named
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise SampleError("bad_image", field, f"{too_big}: {w}x{h}, a decompression bomb; not decoded")
                return np.array(im.convert("RGB"))[None]  # a writable copy
    except Image.DecompressionBombError as e:  # PIL's own check in Image.open (above twice its limit)
        raise SampleError("bad_image", field, f"{too_big}: {e}") from None
    except SampleError:
        raise
    except Exception as e:  # UnidentifiedImageError, OSError (truncated), ValueError, SyntaxError from a plugin, ...
        raise SampleError("decode_error", field,
                          f"'{path}' cannot be decoded ({type(e).__name__}: {str(e)[:200]})") from None


def probe_video(path: str, decoder: str = "decord") -> tuple[int, float]:
    """Open the header only: ``(num_frames, fps)``; raises :class:`SampleError` like :func:`read_video`."""
    _, total, native_fps = _open(path, decoder)
    return total, native_fps

"""Draw scene records (see scenes.py) into RGB frames and write them as H.264 mp4 / JPEG files."""

from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from PIL import Image

from lit_bvllm.world.scenes import COLOURS

GOP_SECONDS = 2  # one keyframe every 2 s, so that seeking decodes a realistic run of frames


@lru_cache(maxsize=8)
def _pixel_centres(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(xs, ys), each (H, W) float32: the centre coordinates of every pixel."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    return xs, ys


def shape_mask(shape: str, cx: float, cy: float, size: float, width: int, height: int) -> np.ndarray:
    """Boolean (H, W) mask of `shape` centred at pixel (cx, cy) with half-size `size` (px)."""
    xs, ys = _pixel_centres(width, height)
    dx, dy = xs - cx, ys - cy
    dist = np.hypot(dx, dy)
    if shape == "circle":
        return dist <= size
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= size
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= size
    if shape == "ring":
        return (dist <= size) & (dist >= 0.55 * size)
    if shape == "cross":
        arm = size / 3
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= size)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= size))
    if shape == "triangle":  # apex up at (0, -size), base at y = size/2
        return (dy <= size / 2) & (dy >= -size + np.sqrt(3.0) * np.abs(dx))
    if shape == "star":  # 5 points, radius goes linearly from 0.45*size (notch) to size (tip)
        phase = np.mod(np.arctan2(dx, -dy), 2 * np.pi / 5) / (2 * np.pi / 5)  # 0 at a tip, 0.5 at a notch
        return dist <= size * (0.45 + 0.55 * np.abs(2 * phase - 1))
    raise ValueError(f"unknown shape {shape!r}")


def background(record: dict) -> np.ndarray:
    """(H, W, 3) uint8 background: a solid colour or a linear two-colour gradient."""
    h, w, bg = record["height"], record["width"], record["background"]
    first = np.array(COLOURS[bg["colours"][0]], np.float32)
    if bg["direction"] == "solid":
        return np.broadcast_to(first.astype(np.uint8), (h, w, 3)).copy()
    second = np.array(COLOURS[bg["colours"][1]], np.float32)
    ramp = np.linspace(0.0, 1.0, h if bg["direction"] == "vertical" else w, dtype=np.float32)
    ramp = ramp[:, None, None] if bg["direction"] == "vertical" else ramp[None, :, None]  # (H,1,1) or (1,W,1)
    img = first + (second - first) * ramp  # broadcasts to (H, W, 3) or (H or 1, W or 1, 3)
    return np.broadcast_to(np.round(img).astype(np.uint8), (h, w, 3)).copy()


def bounce(start: float, velocity: float, t: float, low: float, high: float) -> float:
    """Position at time t of a point moving at `velocity` and reflecting off the walls low/high."""
    span = high - low
    if span <= 0:
        return low
    x = np.mod(start - low + velocity * t, 2 * span)
    return float(low + (x if x <= span else 2 * span - x))


def distractor_centre(d: dict, t: float, width: int, height: int) -> tuple[float, float]:
    """Centre of distractor `d` at time t seconds (bounces off the frame borders)."""
    (x, y), (vx, vy), s = d["position"], d["velocity"], d["size"]
    return bounce(x, vx, t, s, width - s), bounce(y, vy, t, s, height - s)


def render_frames(record: dict):
    """Yield the record's num_frames (H, W, 3) uint8 frames; frame i shows time i / fps.

    A needle is drawn on frames whose time lies in [start, end), on top of the distractors.
    """
    w, h, fps = record["width"], record["height"], record["fps"]
    base = background(record)
    needle_masks = [shape_mask(n["shape"], *n["position"], n["size"], w, h) for n in record["needles"]]
    for i in range(record["num_frames"]):
        t = i / fps
        frame = base.copy()
        for d in record["distractors"]:
            frame[shape_mask(d["shape"], *distractor_centre(d, t, w, h), d["size"], w, h)] = COLOURS[d["colour"]]
        for n, mask in zip(record["needles"], needle_masks):
            if n["start"] <= t < n["end"]:
                frame[mask] = COLOURS[n["colour"]]
        yield frame


def render_image(record: dict) -> np.ndarray:
    """(H, W, 3) uint8 still image: background, distractors at their start positions, needles on top."""
    w, h = record["width"], record["height"]
    img = background(record)
    for item in record["distractors"] + record["needles"]:
        img[shape_mask(item["shape"], *item["position"], item["size"], w, h)] = COLOURS[item["colour"]]
    return img


def write_mp4(record: dict, path: Path) -> None:
    """Encode the record's frames with libx264 (yuv420p, 1 thread, a keyframe every GOP_SECONDS).

    Without macroblock-tree rate control (``no-mbtree``): with it, libx264 (core 165) encoded the same 64x48 frames
    to one of two different streams from one run to the next in the same process (about 1 encode in 6), so the same
    seed did not give the same files. Nothing else in the stream changes: H.264, CRF 18, fixed GOP.
    """
    fps = record["fps"]
    keyint = GOP_SECONDS * fps
    params = f"keyint={keyint}:min-keyint={keyint}:scenecut=0:no-mbtree=1"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps,
                                      options={"crf": "18", "preset": "veryfast", "x264-params": params})
        stream.width, stream.height, stream.pix_fmt = record["width"], record["height"], "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.gop_size = keyint
        for i, array in enumerate(render_frames(record)):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_jpg(record: dict, path: Path) -> None:
    """Save the record's still image as a JPEG (quality 95)."""
    Image.fromarray(render_image(record)).save(path, quality=95)

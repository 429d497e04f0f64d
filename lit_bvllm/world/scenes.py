"""Scene records: what each synthetic video or image shows, sampled from a numpy Generator.

A record is a plain JSON-able dict; the renderer draws it and every annotation is derived from it.
Video record fields (all lengths in pixels, all times in whole seconds):
  id, path, kind ("video"), split ("train" | "eval"), duration, fps, num_frames, width, height,
  background: {"colours": [name] | [name, name], "direction": "solid" | "vertical" | "horizontal"},
  distractors: [{"shape", "colour", "size", "motion", "position": [x, y], "velocity": [vx, vy]}],
  needles: [{"shape", "colour", "start", "end", "position": [x, y], "size"}] sorted by start; a needle is
  drawn on frames with start <= i / fps < end. Distractor "position" is the centre at t = 0, "size" a half-width.
  Eval records also get "copies" (generate.py): the same file under eval/msvd/videos/.
Image records have kind "image" and no duration/fps/num_frames; their needles have no times.
"""

import numpy as np

# Muted colours for backgrounds, pastel/dull colours for distractors, saturated colours for needles:
# the three sets are disjoint so a needle's colour never occurs in the rest of the frame.
BACKGROUNDS = {
    "black": (10, 10, 10),
    "gray": (128, 128, 128),
    "beige": (225, 210, 170),
    "brown": (110, 70, 40),
    "navy": (20, 30, 90),
    "olive": (110, 110, 40),
}
DISTRACTOR_COLOURS = {
    "orange": (255, 140, 0),
    "purple": (120, 40, 150),
    "pink": (255, 170, 200),
    "white": (245, 245, 245),
}
NEEDLE_COLOURS = {
    "red": (230, 20, 20),
    "green": (20, 200, 40),
    "blue": (30, 60, 240),
    "yellow": (250, 230, 20),
    "magenta": (230, 30, 220),
    "cyan": (20, 220, 230),
}
COLOURS = {**BACKGROUNDS, **DISTRACTOR_COLOURS, **NEEDLE_COLOURS}
DISTRACTOR_SHAPES = ("circle", "square")
NEEDLE_SHAPES = ("triangle", "star", "cross", "diamond", "ring")
MOTIONS = ("horizontally", "vertically", "diagonally")
NEEDLE_PROBABILITY = 0.8  # share of training videos and images that contain needles


def _pick(rng: np.random.Generator, options: tuple | list) -> str:
    """One element of `options`, drawn uniformly."""
    return options[int(rng.integers(len(options)))]


def sample_background(rng: np.random.Generator) -> dict:
    """A solid colour (half the time) or a two-colour gradient along a random direction."""
    names = list(BACKGROUNDS)
    if rng.random() < 0.5:
        return {"colours": [_pick(rng, names)], "direction": "solid"}
    first, second = rng.choice(len(names), size=2, replace=False)
    return {"colours": [names[first], names[second]], "direction": _pick(rng, ("vertical", "horizontal"))}


def sample_distractors(rng: np.random.Generator, width: int, height: int) -> list[dict]:
    """1-3 circles/squares of distinct (shape, colour), each bouncing at a constant speed (px/s)."""
    kinds = [(shape, colour) for shape in DISTRACTOR_SHAPES for colour in DISTRACTOR_COLOURS]
    out = []
    for k in rng.choice(len(kinds), size=int(rng.integers(1, 4)), replace=False):
        size = int(rng.integers(5, max(6, min(width, height) // 8) + 1))  # half-width in px
        motion = _pick(rng, MOTIONS)
        speed = float(rng.uniform(0.08, 0.25) * min(width, height))
        sign = rng.choice([-1.0, 1.0], size=2)
        vx = speed * sign[0] if motion != "vertically" else 0.0
        vy = speed * sign[1] if motion != "horizontally" else 0.0
        out.append({
            "shape": kinds[k][0],
            "colour": kinds[k][1],
            "size": size,
            "motion": motion,
            "position": [round(float(rng.uniform(size, width - size)), 2),
                         round(float(rng.uniform(size, height - size)), 2)],
            "velocity": [round(float(vx), 2), round(float(vy), 2)],
        })
    return out


def sample_needle_kinds(rng: np.random.Generator, num_events: int, min_distinct: int) -> list[tuple[str, str]]:
    """(shape, colour) for each event in time order; one needle may repeat, distinct needles differ in shape and colour.

    Args:
        rng: random stream.
        num_events: number of needle events.
        min_distinct: fewest distinct needles (2 for eval videos so that ordering is asked).
    """
    max_repeat = min(3, num_events - min_distinct + 1)
    repeat = int(rng.integers(1, max(1, max_repeat) + 1))
    distinct = num_events - repeat + 1
    shapes = rng.choice(len(NEEDLE_SHAPES), size=distinct, replace=False)
    colours = rng.choice(len(NEEDLE_COLOURS), size=distinct, replace=False)
    kinds = [(NEEDLE_SHAPES[s], list(NEEDLE_COLOURS)[c]) for s, c in zip(shapes, colours)]
    sequence = kinds + [kinds[0]] * (repeat - 1)
    return [sequence[i] for i in rng.permutation(num_events)]


def sample_timeline(rng: np.random.Generator, duration: int, num_events: int) -> list[tuple[int, int]]:
    """Whole-second (start, end) spans of 1-2 s, 1 s clear of both ends and >= 1 s apart.

    Events are dropped from the end of the list until they fit; the caller checks the count it got.
    """
    lengths = [int(x) for x in rng.integers(1, 3, size=num_events)]
    while lengths and sum(lengths) + len(lengths) - 1 > duration - 2:
        lengths = [1] * len(lengths) if max(lengths) > 1 else lengths[:-1]
    if not lengths:
        return []
    slack = duration - 2 - (sum(lengths) + len(lengths) - 1)
    gaps = rng.multinomial(slack, [1.0 / (len(lengths) + 1)] * (len(lengths) + 1))
    spans, t = [], 1 + int(gaps[0])
    for length, gap in zip(lengths, gaps[1:]):
        spans.append((t, t + length))
        t += length + 1 + int(gap)
    return spans


def sample_video(rng: np.random.Generator, video_id: str, path: str, split: str, durations: tuple[int, int],
                 fps_range: tuple[int, int], width: int, height: int, min_needles: int) -> dict:
    """One video record.

    Args:
        rng: random stream owned by this video.
        video_id: record id (the file stem).
        path: file path relative to the dataset root.
        split: "train" or "eval".
        durations: inclusive (min, max) whole seconds.
        fps_range: inclusive (min, max) frames per second.
        width: frame width in px.
        height: frame height in px.
        min_needles: 0 lets 20% of videos have no needle; 2 forces >= 2 events and >= 2 distinct needles.
    """
    duration = int(rng.integers(durations[0], durations[1] + 1))
    fps = int(rng.integers(fps_range[0], fps_range[1] + 1))
    record = {"id": video_id, "path": path, "kind": "video", "split": split, "duration": duration, "fps": fps,
              "num_frames": duration * fps, "width": width, "height": height,
              "background": sample_background(rng), "distractors": sample_distractors(rng, width, height)}
    has_needles = min_needles > 0 or rng.random() < NEEDLE_PROBABILITY
    spans = sample_timeline(rng, duration, int(rng.integers(max(1, min_needles), 5))) if has_needles else []
    if len(spans) < min_needles:  # too short for the drawn lengths: fall back to 1 s events
        spans = sample_timeline(rng, duration, min_needles)
    kinds = sample_needle_kinds(rng, len(spans), min(2, len(spans))) if spans else []
    record["needles"] = [dict(shape=shape, colour=colour, start=start, end=end, **_needle_place(rng, width, height))
                         for (shape, colour), (start, end) in zip(kinds, spans)]
    return record


def _needle_place(rng: np.random.Generator, width: int, height: int) -> dict:
    """A large needle's half-size (a third or more of the frame's height) and a centre that keeps it fully inside
    the frame. The size is what a small vision tower sees: the tiny tower's 32 px input turns a needle of half the
    frame's height into a few 8-px patches; at 0.17-0.24 (one patch) the tiny demo model never learned its colour."""
    size = int(round(min(width, height) * rng.uniform(0.32, 0.42)))
    return {"position": [int(rng.integers(size, width - size + 1)), int(rng.integers(size, height - size + 1))],
            "size": size}


def sample_image(rng: np.random.Generator, image_id: str, path: str, width: int, height: int) -> dict:
    """One still-image record: background, distractors at their start positions, at most one needle."""
    record = {"id": image_id, "path": path, "kind": "image", "split": "train", "width": width, "height": height,
              "background": sample_background(rng), "distractors": sample_distractors(rng, width, height)}
    needles = []
    if rng.random() < NEEDLE_PROBABILITY:
        shape, colour = sample_needle_kinds(rng, 1, 1)[0]
        needles.append(dict(shape=shape, colour=colour, **_needle_place(rng, width, height)))
    record["needles"] = needles
    return record

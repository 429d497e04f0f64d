"""make_synthetic: write a deterministic synthetic video-LLM dataset (videos, images, train and eval annotations)."""

import json
import math
import shutil
from pathlib import Path

import numpy as np

from lit_bvllm.world.annotations import finetune_entries, pretrain_entries, to_llamavid
from lit_bvllm.world.benchmarks import write_benchmark_fixtures
from lit_bvllm.world.evalsets import msvd_files, vnbench_entries
from lit_bvllm.world.needles import NEEDLE_FILES, needle_folder, write_needle_sets
from lit_bvllm.world.render import write_jpg, write_mp4
from lit_bvllm.world.scenes import sample_image, sample_video

# Independent random streams: numpy.random.default_rng([seed, stream, index]); needles.py draws from 8, 9 and 11.
TRAIN_VIDEOS, EVAL_VIDEOS, IMAGES, PRETRAIN, FINETUNE, VNBENCH, MSVD, BENCHMARKS = range(8)
VNBENCH_EVERY_FRAME = 10  # eval/vnbench's every-frame questions (evalsets.EVERY_FRAME), added after streams 0..9
VAL_VIDEOS, VAL = 12, 13  # finetune_val.json's videos and conversations: their own streams, the rest unchanged
MIN_DURATION = 8  # seconds: room for two needle events of up to 2 s, 1 s apart, 1 s clear of both ends


def _duration_checks(low: float, high: float, flag: str) -> list[tuple[bool, str]]:
    return [
        (low >= MIN_DURATION,
         f"--{flag}min-duration must be >= {MIN_DURATION} s (two needle events with gaps), got {low}"),
        (low <= high, f"--{flag}min-duration ({low}) must be <= --{flag}max-duration ({high})"),
        (math.ceil(low) <= math.floor(high),
         f"no whole number of seconds lies in [--{flag}min-duration, --{flag}max-duration] = [{low}, {high}]"),
    ]


def validate(seed: int, num_videos: int, num_eval_videos: int, min_duration: float, max_duration: float,
             min_fps: int, max_fps: int, width: int, height: int, eval_min_duration: float | None = None,
             eval_max_duration: float | None = None, needle_lengths: list[int] | None = None,
             needle_videos: int = 50, needles_only: bool = False, num_val_videos: int = 0) -> None:
    """Raise ValueError naming the flag to change when the arguments of make_synthetic cannot work."""
    lengths = list(needle_lengths or [])
    checks = [
        (seed >= 0, f"--seed must be >= 0, got {seed}"),
        (num_videos >= 1, f"--num-videos must be >= 1, got {num_videos}"),
        (num_eval_videos >= 1, f"--num-eval-videos must be >= 1, got {num_eval_videos}"),
        (num_val_videos >= 0, f"--num-val-videos must be >= 0, got {num_val_videos}"),
        *_duration_checks(min_duration, max_duration, ""),
        *_duration_checks(min_duration if eval_min_duration is None else eval_min_duration,
                          max_duration if eval_max_duration is None else eval_max_duration, "eval-"),
        (min_fps >= 2, f"--min-fps must be >= 2: videos must encode above 1 fps, got {min_fps}"),
        (min_fps <= max_fps, f"--min-fps ({min_fps}) must be <= --max-fps ({max_fps})"),
        (width >= 32 and height >= 32, f"--width and --height must be >= 32 px, got {width}x{height}"),
        (width % 2 == 0 and height % 2 == 0, f"--width and --height must be even for yuv420p, got {width}x{height}"),
        (all(isinstance(n, int) and n >= MIN_DURATION for n in lengths),
         f"--needle-lengths must be whole seconds >= {MIN_DURATION} (two needle events with gaps), got {lengths}"),
        (len(set(lengths)) == len(lengths), f"--needle-lengths repeats a length: {lengths}"),
        (needle_videos >= 1, f"--needle-videos must be >= 1, got {needle_videos}"),
        (bool(lengths) or not needles_only, "--needles-only true writes the needle sets alone: give --needle-lengths"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def _write_json(path: Path, obj: object, sort_keys: bool = False) -> None:
    """Write `obj` as indented UTF-8 JSON with a trailing newline (byte-identical for equal objects)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n", encoding="utf-8")


def _prune(folder: Path, pattern: str, keep: set[str]) -> None:
    """Delete files of ours (`pattern`) left in `folder` by an earlier, larger run."""
    for path in folder.glob(pattern):
        if path.name not in keep:
            path.unlink()


def make_synthetic(
    out: str | Path,
    seed: int = 0,
    num_videos: int = 24,
    num_eval_videos: int = 12,
    min_duration: float = 8.0,
    max_duration: float = 128.0,
    min_fps: int = 4,
    max_fps: int = 8,
    width: int = 128,
    height: int = 96,
    eval_min_duration: float | None = None,
    eval_max_duration: float | None = None,
    needle_lengths: list[int] | None = None,
    needle_videos: int = 50,
    needles_only: bool = False,
    num_val_videos: int = 0,
) -> dict:
    """Write a deterministic synthetic dataset of H.264 videos with timed "needle" shapes and their annotations.

    Writes under `out`: videos/, images/, metadata.json, pretrain.json, finetune.json, finetune_llamavid.json,
    eval/vnbench/{VNBench_qa.json,videos/} and eval/msvd/{test_qa.json,test_q.json,test_a.json,videos/}, then
    the other benchmarks' eval sets in their official formats (benchmarks.py): eval/mvbench, eval/videomme,
    eval/egoschema, eval/perception_test, eval/nextqa, eval/msrvtt_qa and eval/activitynet_qa, their videos hard
    links to (or copies of) the eval mp4s; with ``needle_lengths``, eval/needle_<L>s/ per length (needles.py). The
    same seed gives byte-identical JSON and identical decoded frames.

    Args:
        out: folder to write the dataset into (created if missing; our own files in it are overwritten).
        seed: random seed (>= 0); every video, image and annotation file has its own stream derived from it.
        num_videos: number of training videos (videos/vid_XXXX.mp4).
        num_eval_videos: number of held-out eval videos, disjoint from training, shared by every eval set.
        min_duration: shortest video in seconds (>= 8); durations are whole seconds drawn uniformly.
        max_duration: longest video in seconds.
        min_fps: lowest frame rate (>= 2); each video's fps is an integer drawn uniformly.
        max_fps: highest frame rate.
        width: frame width in pixels (even).
        height: frame height in pixels (even).
        eval_min_duration: shortest eval video in seconds (default: ``min_duration``); eval videos may be longer
            than training ones, as benchmark videos are (the needle set: 64-128 s against <= 32 s of training).
        eval_max_duration: longest eval video in seconds (default: ``max_duration``).
        needle_lengths: also write the needle study's held-out sets, one per length (whole seconds):
            ``eval/needle_<L>s/{VNBench_qa.json,metadata.json,videos/}``, ``needle_videos`` videos of exactly ``L``
            s each, drawn from their own random streams (needles.py); None (the default) writes none.
        needle_videos: videos per needle set (3 needle questions and the every-frame one x 4 circular tries each;
            50 makes one question worth 2 points of a per-type circular score).
        num_val_videos: also write ``finetune_val.json``, held-out conversations in the training set's forms on
            their own videos (``videos/val_XXXX.mp4``, training durations): ``--data.val`` for a validation loss
            and selection figures while training. 0 (the default) writes none; the training files do not change.
        needles_only: write only the needle sets, leaving everything else under ``out`` as it is (add them to a
            dataset written earlier; give the flags it was written with: the sets use ``seed``, the fps range and
            the frame size).

    Returns:
        A summary: counts of videos, images and entries per annotation file, total seconds, files written;
        ``benchmark_entries`` counts the questions of each benchmark fixture file (benchmarks.py); with
        ``needle_lengths``, ``needle_sets``: per folder its videos, items, seconds and generation time.
    """
    eval_min = min_duration if eval_min_duration is None else eval_min_duration
    eval_max = max_duration if eval_max_duration is None else eval_max_duration
    validate(seed, num_videos, num_eval_videos, min_duration, max_duration, min_fps, max_fps, width, height,
             eval_min, eval_max, needle_lengths, needle_videos, needles_only, num_val_videos)
    root = Path(out)
    if needles_only:
        return {"out": str(root), "needle_sets": write_needle_sets(
            root, seed, list(needle_lengths), needle_videos, (min_fps, max_fps), width, height, _write_json)}
    durations, fps_range = (math.ceil(min_duration), math.floor(max_duration)), (min_fps, max_fps)
    eval_durations = (math.ceil(eval_min), math.floor(eval_max))
    for folder in ("videos", "images", "eval/vnbench/videos", "eval/msvd/videos"):
        (root / folder).mkdir(parents=True, exist_ok=True)

    def rng(stream: int, index: int = 0) -> np.random.Generator:
        """The random stream of one file or record: depends only on (seed, stream, index)."""
        return np.random.default_rng([seed, stream, index])

    videos = [sample_video(rng(TRAIN_VIDEOS, i), f"vid_{i:04d}", f"videos/vid_{i:04d}.mp4", "train",
                           durations, fps_range, width, height, min_needles=0) for i in range(num_videos)]
    evals = [sample_video(rng(EVAL_VIDEOS, i), f"eval_{i:04d}", f"eval/vnbench/videos/eval_{i:04d}.mp4", "eval",
                          eval_durations, fps_range, width, height, min_needles=2) for i in range(num_eval_videos)]
    vals = [sample_video(rng(VAL_VIDEOS, i), f"val_{i:04d}", f"videos/val_{i:04d}.mp4", "val", durations, fps_range,
                         width, height, min_needles=0) for i in range(num_val_videos)]
    images = [sample_image(rng(IMAGES, i), f"img_{i:04d}", f"images/img_{i:04d}.jpg", width, height)
              for i in range(max(2, num_videos // 4))]
    for record in videos + vals + evals:
        write_mp4(record, root / record["path"])
    for record in evals:
        record["copies"] = [f"eval/msvd/videos/{record['id']}.mp4"]
        shutil.copyfile(root / record["path"], root / record["copies"][0])
    for record in images:
        write_jpg(record, root / record["path"])
    _prune(root / "videos", "vid_*.mp4", {Path(r["path"]).name for r in videos})
    _prune(root / "videos", "val_*.mp4", {Path(r["path"]).name for r in vals})
    if not vals:  # an earlier run's, whose videos were just pruned
        (root / "finetune_val.json").unlink(missing_ok=True)
    _prune(root / "images", "img_*.jpg", {Path(r["path"]).name for r in images})
    for folder in ("eval/vnbench/videos", "eval/msvd/videos"):
        _prune(root / folder, "eval_*.mp4", {f"{r['id']}.mp4" for r in evals})

    finetune = finetune_entries(videos, images, rng(FINETUNE))
    msvd_qa, msvd_q, msvd_a = msvd_files(evals, rng(MSVD))
    files = {
        "pretrain.json": pretrain_entries(videos, images, rng(PRETRAIN)),
        "finetune.json": finetune,
        "finetune_llamavid.json": to_llamavid(finetune),
        "eval/vnbench/VNBench_qa.json": vnbench_entries(evals, rng(VNBENCH), rng(VNBENCH_EVERY_FRAME)),
        "eval/msvd/test_qa.json": msvd_qa,
        "eval/msvd/test_q.json": msvd_q,
        "eval/msvd/test_a.json": msvd_a,
        **({"finetune_val.json": finetune_entries(vals, [], rng(VAL))} if vals else {}),
    }
    config = {"seed": seed, "num_videos": num_videos, "num_eval_videos": num_eval_videos, "min_duration": min_duration,
              "max_duration": max_duration, "min_fps": min_fps, "max_fps": max_fps, "width": width, "height": height,
              "eval_min_duration": eval_min, "eval_max_duration": eval_max, "num_val_videos": num_val_videos}
    _write_json(root / "metadata.json", {"config": config, "videos": videos + vals + evals, "images": images},
                sort_keys=True)
    for name, entries in files.items():
        _write_json(root / name, entries)
    benchmarks = write_benchmark_fixtures(root, evals, lambda index: rng(BENCHMARKS, index), _write_json)
    needles = write_needle_sets(root, seed, list(needle_lengths or []), needle_videos, fps_range, width, height,
                                _write_json)
    return {
        "out": str(root),
        "videos": len(videos),
        "eval_videos": len(evals),
        "val_videos": len(vals),
        "images": len(images),
        "seconds": sum(r["duration"] for r in videos),
        "eval_seconds": sum(r["duration"] for r in evals),
        "entries": {name: len(entries) for name, entries in files.items()},
        "benchmark_entries": benchmarks,
        "files": ["metadata.json", *files, *benchmarks,
                  *(f"{needle_folder(n)}/{name}" for n in needle_lengths or [] for name in NEEDLE_FILES)],
        **({"needle_sets": needles} if needles else {}),
    }

"""The tower's HF image processor (``--data.transform processor``) against bare decord, in whichever environment runs
this script: with torchvision installed transformers takes its fast (torch) processors, without it the PIL ones.

Usage (the suite's venv, then a venv that has torchvision; issue 27, item 5)::

    python benchmarks/processor_path.py --tower artifacts/tiny/vision --videos artifacts/synthetic/finetune.json

In one process, on the first ``--count`` video entries at 1 fps (cap 128): decord alone on the frames the data
modules decode; decord + ``FrameTransform("processor")`` (uint8 out, as the data modules build it); decord +
``FrameTransform("plain")``. One warm-up round, then ``--passes`` rounds, settings taking turns; medians. Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from datamodules.transforms import FrameTransform  # noqa: E402
from datamodules.video import FrameSampling, read_video  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tower", required=True, help="vision tower folder (its image processor)")
    parser.add_argument("--videos", required=True, help="an annotation file whose video entries are timed")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    root = Path(args.videos).parent
    paths = [str(root / e["video"]) for e in json.loads(Path(args.videos).read_text()) if "video" in e][:args.count]
    sampling = FrameSampling("fps", 1.0, max_frames=128)
    transforms = {name: FrameTransform(name, args.tower, normalize=False) for name in ("processor", "plain")}
    runs = {"decord": lambda f: None, **{name: t for name, t in transforms.items()}}
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.passes + 1):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            for p in paths:
                fn(read_video(p, sampling)[0])
            if r:
                seconds[name].append(time.perf_counter() - t0)
    median = {k: float(np.median(v)) for k, v in seconds.items()}
    try:
        import torchvision
        tv = torchvision.__version__
    except Exception as e:  # the suite's venv: not installed, or a build that does not load
        tv = f"unavailable ({type(e).__name__})"
    print(json.dumps({"torch": torch.__version__, "torchvision": tv,
                      "processor_class": type(transforms["processor"].processor).__name__, "videos": len(paths),
                      "seconds": median, "vs_bare_decord": {k: median["decord"] / v for k, v in median.items()}}))


if __name__ == "__main__":
    main()

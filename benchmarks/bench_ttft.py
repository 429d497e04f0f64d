"""Time to first token per strategy: a 128 s needle video at 1 fps, from decoded frames to the first generated token
(issue 25, item 4), with the needle study's strategies at θ = 96 on the demo's backbones.

    python benchmarks/bench_ttft.py --root DEMO_CLONE [--length 128] [--items 4] [--reps 3] [--out FILE]

Each strategy is ``experiments/sweeps/needle_strategies.yaml``'s spec (B-VLLM and LLaMA-VID from make-tiny's
Q-Former; the rest untrained: the weights do not change the cost), built on make-tiny's tower and LLM under
``DIR/artifacts``. For each, ``VideoLLM.generate(max_new_tokens=1)`` on the same decoded batch of ``--items`` items
of the ``needle_<length>s`` set (its questions, generate mode), the median of ``--reps`` after a warm-up: the
vision tower over the frames the reducer reads, the reducer, the projector and the LLM's prefill. B-VLLM runs twice:
with the two evaluation passes ([CLS] of every frame, then the picked frames' patches) and with one. On a CPU the
ratios between strategies are the numbers to read; the frames encoded and the visual tokens say where they come
from.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def strategies() -> list[tuple[str, dict]]:
    spec = yaml.safe_load((REPO / "experiments/sweeps/needle_strategies.yaml").read_text())
    out = []
    for s in spec["grid"]["model.reducer"]:
        name = s["class_path"].rsplit(".", 1)[1]
        out.append((name, s))
        if name == "BVLLM":
            out.append(("BVLLM (one pass)", s))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=".", help="the folder whose artifacts/ holds make demo's backbones and data")
    p.add_argument("--length", type=int, default=128, help="the needle set (make study-data writes 16, 64, 128)")
    p.add_argument("--items", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default="artifacts/bench/ttft.json")
    a = p.parse_args()
    from datamodules.benchmarks import BenchmarkDataModule, VNBench
    from lit_bvllm.model import VideoLLM, reducer_factory

    art = Path(a.root).resolve() / "artifacts"
    dm = BenchmarkDataModule(VNBench(str(art / "synthetic" / "eval" / f"needle_{a.length}s")), str(art / "tiny/llm"),
                             vision_tower=str(art / "tiny/vision"), num_workers=0, batch_size=a.items,
                             limit=a.items, mode="generate")
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    rows = []
    for name, spec in strategies():
        init = {k: (str(art / "tiny/qformer") if k == "qformer" else v) for k, v in spec["init_args"].items()}
        torch.manual_seed(0)
        model = VideoLLM(str(art / "tiny/llm"), str(art / "tiny/vision"),
                         reducer_factory({"class_path": spec["class_path"], "init_args": init})).eval()
        model.two_pass = name != "BVLLM (one pass)"
        with torch.no_grad():
            _, info = model.generate(batch, max_new_tokens=1, return_info=True)  # warm-up
            times = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                model.generate(batch, max_new_tokens=1)
                times.append(time.perf_counter() - t0)
        ms = statistics.median(times) * 1000 / a.items
        rows.append({"strategy": name, "ms_per_item": ms, "frames": float(batch["frame_mask"].sum(1).float().mean()),
                     "frames_encoded": float(info["frames_encoded"].float().mean()),
                     "patches_encoded": float(info["patches_encoded"].float().mean()),
                     "visual_tokens": float(info["num_tokens"].float().mean())})
        print(f"{name:<18} {ms:8.1f} ms/item  frames encoded {rows[-1]['frames_encoded']:6.1f} of "
              f"{rows[-1]['frames']:.0f} (their patches kept: {rows[-1]['patches_encoded']:6.1f})  visual tokens "
              f"{rows[-1]['visual_tokens']:5.1f}", flush=True)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
              "length_s": a.length, "items": a.items, "reps": a.reps, "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Training-step time and peak memory against video length: B-VLLM at θ beside Identity (every token of every
frame) and Uniform (a fixed frame count), on the same frames, with the demo's tower and LLM.

    python benchmarks/bench_length.py [--lengths 16 32 64 128 256] [--steps 5] [--out artifacts/bench/length.json]

The model is the finetuning stage of the embedded default (``experiments/pretrain.yaml`` + ``finetune.yaml``: the
tiny tower, the tiny LLM with LoRA, lr as there) built through the same CLI parser ``lit_bvllm fit`` uses; only the
reducer changes. The batch is a real collated training batch of the demo's finetuning set (4 samples), its frames
looped in time to ``L`` frames (a video of L seconds at 1 fps): every reducer sees the same frames and text.

Per point: mean of ``--steps`` steps (forward, backward, AdamW step) after 2 warm-up steps, the vision tower's and
the reducer's forward timed by hooks; then one more step under ``MemTracker`` (``torch.distributed._tools``) for the
peak of live tensor bytes (parameters, gradients, optimizer state, activations, temporaries). On CPU only ratios
within one run mean anything.
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
from peak_memory import peak_memory, tensors
from profile_step import build_stage, timed_modules

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PATCHES = 16  # the tiny tower's 4x4 grid
REDUCERS = {  # θ = 96 as in the needle study; Identity keeps everything (its budget only has to hold 256 frames)
    "BVLLM": None,  # pretrain.yaml's: L* = 16, R = 8, θ = 96
    "Uniform": {"class_path": "lit_bvllm.reducers.Uniform", "init_args": {"num_frames": 6, "pool": 1, "budget": 96}},
    "Identity": {"class_path": "lit_bvllm.reducers.Identity",
                 "init_args": {"budget": 256 * PATCHES, "truncate": False, "num_patches": PATCHES}},
}


def build(reducer: dict | None):
    args = ["--config", "experiments/pretrain.yaml", "--config", "experiments/finetune.yaml",
            "--model.init_from", "null", "--data.num_workers", "0"]
    if reducer is not None:
        args += ["--model.reducer", json.dumps(reducer)]
    return build_stage(args)


def at_length(batch: dict, length: int) -> dict:
    """The batch with each sample's frames looped to ``length`` frames (1 fps: ``length`` seconds)."""
    out = dict(batch)
    n = batch["frame_mask"].sum(1).clamp_min(1)  # (B,) real frames per sample (an image-only sample: its 1 slot)
    idx = torch.arange(length)[None] % n[:, None]  # (B, L)
    out["frames"] = batch["frames"][torch.arange(len(n))[:, None], idx]  # (B, L, 3, H, W)
    out["frame_mask"] = torch.ones(len(n), length, dtype=torch.bool)
    out["frame_times"] = torch.arange(length, dtype=torch.float32).expand(len(n), length).clone()
    return out


def step(model, opt, batch) -> dict:
    out, info = model(batch)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return info


def measure(model, batch: dict, steps: int) -> dict:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    spent: dict[str, list[float]] = {"vision": [], "reducer": []}
    hooks = timed_modules(model, spent, names=spent)
    times = []
    for i in range(2 + steps):
        t0 = time.perf_counter()
        info = step(model, opt, batch)
        times.append(time.perf_counter() - t0)
    for h in hooks:
        h.remove()
    _, peak = peak_memory(lambda: step(model, opt, batch), model, opt, *tensors(batch))
    return {"step_ms": 1e3 * statistics.fmean(times[2:]), "tower_ms": 1e3 * statistics.fmean(spent["vision"][2:]),
            "reducer_fwd_ms": 1e3 * statistics.fmean(spent["reducer"][2:]),
            "visual_tokens_max": int(info["num_tokens"].max()), "frames_encoded": int(info["frames_encoded"].max()),
            "peak_mib": peak["total"], "peak_by_kind_mib": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", type=Path, default=REPO / "artifacts/bench/length.json")
    a = ap.parse_args()
    os.chdir(REPO)
    rows = []
    for name, spec in REDUCERS.items():
        torch.manual_seed(0)
        model, dm = build(spec)
        batch = next(iter(dm.train_dataloader()))
        budget = model.reducer.budget
        for length in a.lengths:
            r = {"reducer": name, "length_s": length, "budget": budget,
                 **measure(model, at_length(batch, length), a.steps)}
            rows.append(r)
            print(f"{name:9s} {length:4d} s: {r['visual_tokens_max']:5d} visual tokens (θ {budget}), "
                  f"{r['frames_encoded']:3d} frames encoded, step {r['step_ms']:7.1f} ms (tower {r['tower_ms']:6.1f}, "
                  f"reducer forward {r['reducer_fwd_ms']:5.1f}), "
                  f"peak {r['peak_mib']:7.1f} MiB", flush=True)
    base = {r["reducer"]: r for r in rows if r["length_s"] == min(a.lengths)}
    print(f"\n| reducer | length (s) | visual tokens | frames encoded | step ms | x{min(a.lengths)} s | tower ms | "
          "reducer forward ms | rest of the step ms | peak MiB |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['reducer']} | {r['length_s']} | {r['visual_tokens_max']} | {r['frames_encoded']} | "
              f"{r['step_ms']:.1f} | {r['step_ms'] / base[r['reducer']]['step_ms']:.2f} | {r['tower_ms']:.1f} | "
              f"{r['reducer_fwd_ms']:.1f} | {r['step_ms'] - r['tower_ms'] - r['reducer_fwd_ms']:.1f} | "
              f"{r['peak_mib']:.1f} |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                                 "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                                            f"{torch.get_num_threads()} threads",
                                 "command": " ".join(["python", "benchmarks/bench_length.py", *sys.argv[1:]]),
                                 "points": rows}, indent=2))
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()

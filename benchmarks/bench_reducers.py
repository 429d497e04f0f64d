"""Reducer cost against video length at a fixed budget θ: forward+backward time and peak memory per strategy,
and B-VLLM batched against the same computation one sample at a time.

    python benchmarks/bench_reducers.py --out artifacts/bench [--quick]

Each (reducer, T) point runs in its own process so that its peak memory is its own: peak = growth of the
process's maximum resident set during forward+backward (CPU), or ``torch.cuda.max_memory_allocated`` on a GPU.
On CPU only ratios within one run mean anything; absolute times need a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

D, GRID, B, BUDGET, VOCAB = 128, 8, 4, 256, 1000  # width, patch grid side (N = 64), batch, θ, question vocabulary
N = GRID * GRID
QF = dict(hidden_size=128, num_layers=2, num_heads=4, vocab_size=VOCAB)


def build(name: str):
    from lit_bvllm import reducers as R

    return {
        "Uniform": lambda: R.Uniform(D, num_frames=BUDGET // N, budget=BUDGET),
        "MeanPool": lambda: R.MeanPool(D, num_patches=N, budget=BUDGET),
        "Identity": lambda: R.Identity(D, budget=BUDGET, truncate=True, num_patches=N),
        "WeightedSampler": lambda: R.WeightedSampler(D, tokens_per_frame=16, score="learned", max_frames=BUDGET // 16),
        "TokenLearner": lambda: R.TokenLearner(D, num_tokens=BUDGET),
        "GroupedTTM": lambda: R.GroupedTTM(D, tokens_per_frame=N, num_tokens=BUDGET, num_layers=2, num_heads=4,
                                           max_frames=32),
        "LLaMAVID": lambda: R.LLaMAVID(D, budget=BUDGET, num_queries=32, **QF),
        "BVLLM": lambda: R.BVLLM(D, num_frames=16, num_tokens=32, budget=BUDGET, num_queries=32, **QF),
    }[name]()


def batch(T: int, b: int = B, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        frames=torch.randn(b, T, N, D, generator=g),
        cls=torch.randn(b, T, D, generator=g),
        frame_mask=torch.ones(b, T, dtype=torch.bool),
        text_ids=torch.randint(1, VOCAB, (b, 24), generator=g),
        text_mask=torch.ones(b, 24, dtype=torch.long),
        cls_attn=torch.softmax(torch.randn(b, T, N, generator=g), -1),
    )


def encoded(reducer, x: dict) -> dict:
    """Only the frames the reducer reads, as a model would pass them after ``frames_to_encode``."""
    keep = reducer.frames_to_encode(x["frame_mask"])
    t = int(keep.sum(1).max())
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :t]
    out = dict(x)
    for k in ("frames", "cls", "cls_attn"):
        out[k] = torch.gather(x[k], 1,
                              order.reshape(*order.shape, *[1] * (x[k].dim() - 2)).expand(-1, -1, *x[k].shape[2:]))
    out["frame_mask"] = torch.gather(keep, 1, order)
    return out


def fwd_bwd(reducer, x: dict) -> None:
    """Forward, and backward where the reducer has something to train (the frozen tower's frames need no gradient)."""
    out = reducer(**x)
    if out.tokens.requires_grad:
        out.tokens.float().square().mean().backward()


def one(name: str, T: int, reps: int, device: str) -> dict:
    """Time and peak memory of forward+backward for one reducer at one T (run in a fresh process)."""
    torch.manual_seed(0)
    reducer = build(name).to(device).train()
    x = {k: v.to(device) for k, v in encoded(reducer, batch(T)).items()}
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after building model and inputs, before any pass
    fwd_bwd(reducer, x)  # warm-up
    reducer.zero_grad(set_to_none=True)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fwd_bwd(reducer, x)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        reducer.zero_grad(set_to_none=True)
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
               else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
    out = reducer.eval()(**x)
    return {"reducer": name, "T": T, "frames_encoded": int(x["frame_mask"].sum(1).max()),
            "ms": 1e3 * statistics.median(times),
            "peak_mb": round(peak_mb, 1), "tokens": int(out.token_mask.sum(1).max()),
            "params": sum(p.numel() for p in reducer.parameters())}


def batched_vs_loop(T: int, reps: int, device: str) -> dict:
    """B-VLLM on a batch against the same samples one at a time (eval and train), same process."""
    torch.manual_seed(0)
    reducer = build("BVLLM").to(device)
    x = {k: v.to(device) for k, v in batch(T, b=8).items()}
    singles = [{k: v[i : i + 1] for k, v in x.items()} for i in range(8)]
    res = {}
    for mode in ("eval", "train"):
        reducer.train(mode == "train")

        def batched():
            (fwd_bwd(reducer, x) if mode == "train" else reducer(**x))

        def looped():
            for s in singles:
                (fwd_bwd(reducer, s) if mode == "train" else reducer(**s))

        for fn, key in ((batched, "batched_ms"), (looped, "loop_ms")):
            with torch.set_grad_enabled(mode == "train"):
                fn()
                ts = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    fn()
                    if device == "cuda":
                        torch.cuda.synchronize()
                    ts.append(time.perf_counter() - t0)
            res[f"{mode}_{key}"] = 1e3 * statistics.median(ts)
        res[f"{mode}_speedup"] = res[f"{mode}_loop_ms"] / res[f"{mode}_batched_ms"]
    return {"T": T, "B": 8, **res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="artifacts/bench")
    ap.add_argument("--quick", action="store_true", help="T in {16, 64}, 2 repetitions")
    ap.add_argument("--one", nargs=2, metavar=("REDUCER", "T"), help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(torch.get_num_threads())
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.reps, device)))
        return
    ts = [16, 64] if args.quick else [16, 32, 64, 128, 256]
    reps = 2 if args.quick else args.reps
    names = ["Uniform", "MeanPool", "Identity", "WeightedSampler", "TokenLearner", "GroupedTTM", "LLaMAVID", "BVLLM"]
    rows = []
    for name in names:
        for T in ts:
            cmd = [sys.executable, __file__, "--one", name, str(T), "--reps", str(reps)]
            rows.append(json.loads(
                subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]))
            print(f"{name:<16} T={T:<4} {rows[-1]['ms']:9.1f} ms  peak +{rows[-1]['peak_mb']:8.1f} MB  "
                  f"tokens {rows[-1]['tokens']:4d}  frames read {rows[-1]['frames_encoded']}", flush=True)
    loop = batched_vs_loop(64, reps, device)
    print(f"BVLLM batched vs per-sample loop (B=8, T=64): eval x{loop['eval_speedup']:.2f}, "
          f"train x{loop['train_speedup']:.2f}")
    report = {
        "machine": {"device": device, "threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__,
                    "cpu": platform.processor() or platform.machine()},
        "setup": {"D": D, "N": N, "B": B, "budget": BUDGET},
        "rows": rows,
        "bvllm_batched_vs_loop": loop,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reducers.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'reducers.json'}")


if __name__ == "__main__":
    main()

"""Where a training step of the demo goes: data (decode + transform, through the real DataLoader), the vision tower,
the reducer, the LLM forward, the backward pass and the optimizer step, each timed on the demo's configs; then the
tower alone, stopping at its feature layer against running every layer.

    python benchmarks/profile_step.py [--steps 20] [--config experiments/pretrain.yaml --config ...]

The model and data come from the same configs `lit_bvllm fit` reads (the embedded default: run `make demo` or
`make study-data` first). Forward times come from hooks on the tower, the reducer and the LLM; the rest is timed
around the calls. On CPU only the shares mean anything.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch


def build_stage(args: list[str]):
    """The training model (in train mode) and its data module, set up for ``fit``, from ``lit_bvllm fit`` flags."""
    from lit_bvllm.cli.commands import lightning_cli

    cli = lightning_cli(args, run=False)
    module, dm = cli.model, cli.datamodule
    module.configure_model()
    dm.setup("fit")
    return module.model.train(), dm


def timed_modules(model, times: dict, names=("vision", "reducer", "llm")) -> list:
    """Forward hooks that add each call's wall time to ``times[name]``; their handles."""
    start, handles = {}, []
    for name in names:
        module = getattr(model, name)
        handles.append(module.register_forward_pre_hook(lambda m, a, n=name: start.__setitem__(n, time.perf_counter())))
        handles.append(module.register_forward_hook(
            lambda m, a, o, n=name: times[n].append(time.perf_counter() - start[n])))
    return handles


def tower_depth(vision, batch: dict, reps: int = 20) -> dict[int, float]:
    """Median ms of the tower over ``batch``'s frames when it stops at the feature layer (what it does) and when it
    runs every layer (what it did before: the layers after the feature layer were computed and thrown away)."""
    depths, times = (vision.depth, len(vision._layers())), {}
    mask = batch["frame_mask"]
    for d in depths:
        times[d] = []
    for _ in range(reps + 3):
        for d in depths:  # interleaved, so both see the same machine
            vision.depth = d
            t0 = time.perf_counter()
            vision(batch["frames"], mask, mask)
            times[d].append(time.perf_counter() - t0)
    vision.depth = depths[0]
    return {d: 1e3 * statistics.median(v[3:]) for d, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    configs = a.config or ["experiments/pretrain.yaml", "experiments/finetune.yaml"]
    model, dm = build_stage([x for c in configs for x in ("--config", c)] + ["--model.init_from", "null"])
    opt = torch.optim.AdamW(model.visual_params() + [p for p in model.llm.parameters() if p.requires_grad], lr=1e-4)
    times: dict[str, list[float]] = defaultdict(list)
    timed_modules(model, times)
    loader = iter(dm.train_dataloader())
    steps = []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        batch = next(loader)
        t1 = time.perf_counter()
        out, _ = model(batch)
        t2 = time.perf_counter()
        out.loss.backward()
        t3 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        steps.append({"data": t1 - t0, "forward": t2 - t1, "backward": t3 - t2, "optimizer": t4 - t3})
    keep = steps[a.warmup:]
    med = {k: statistics.fmean(s[k] for s in keep) for k in keep[0]}  # means: the parts add up to the step
    fwd = {k: statistics.fmean(v[a.warmup:]) for k, v in times.items()}
    parts = {"waiting for data (workers decode ahead)": med["data"], "vision tower": fwd["vision"],
             "reducer": fwd["reducer"], "LLM forward": fwd["llm"],
             "rest of the forward (splice, loss)": med["forward"] - fwd["vision"] - fwd["reducer"] - fwd["llm"],
             "backward": med["backward"], "optimizer step": med["optimizer"]}
    total = sum(parts.values())
    print(f"mean of {a.steps} steps after {a.warmup} warm-up, batch {dm.hparams.batch_size}, "
          f"configs {' + '.join(configs)}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| stage | ms | share |\n|---|---|---|")
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {1e3 * v:.1f} | {100 * v / total:.0f}% |")
    print(f"| step | {1e3 * total:.1f} | |")
    cut, full = tower_depth(model.vision, batch).values()
    print(f"vision tower over the last batch's {int(batch['frame_mask'].sum())} frames, median of 20: "
          f"{cut:.1f} ms up to "
          f"the feature layer ({model.vision.depth} of {len(model.vision._layers())} layers), {full:.1f} ms through "
          f"every layer ({cut / full:.2f}x)")


if __name__ == "__main__":
    main()

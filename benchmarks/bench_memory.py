"""Peak memory of a long-video evaluation with a CLIP-L/14-336-shaped tower: what an hour at 1 fps costs.

    python benchmarks/bench_memory.py [--frames 16 32 64] [--chunks 16 64] [--out artifacts/bench/memory.json]

The evaluation is the suite's own multiple-choice path (``VideoLLM.option_scores``: uint8 frames -> tower in chunks
-> B-VLLM at the paper's settings, ``experiments/reducers/bvllm.yaml`` -> projector -> LLM over 4 options). The tower
is built from CLIP-L/14-336's published config with random weights (saved once with ``save_pretrained`` and loaded
through the same ``from_pretrained(local_path)`` path a real checkpoint takes; nothing is downloaded); the LLM is
the embedded default's tiny one (``make-tiny``): the visual path is what grows with the video.

Each point runs in a fresh process. "peak" is the most bytes live in tensors at once (``MemTracker`` from
``torch.distributed._tools``: parameters, inputs, activations, temporaries; on a GPU the caching allocator adds its
fragmentation on top); "max RSS" is the process's high-water mark (CPU: includes the allocator's and Python's own).
An hour (3,600 frames, 1,379 TFLOPs through the tower) is out of reach of a CPU; since every term of the peak is
either fixed or proportional to the frame count (the table shows which), the hour's peak is the largest point's
plus the measured bytes per extra frame times the frames it lacks. On a GPU, run ``--frames 3600`` directly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# openai/clip-vit-large-patch14-336
CLIP_L = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
HOUR = 3600
MIB = 2**20


def clip_l_tower(folder: Path, layers: int = CLIP_L["num_hidden_layers"]) -> Path:
    """A CLIP-L/14-336-shaped vision tower with random weights, in the ``save_pretrained`` layout (once)."""
    if (folder / "config.json").is_file():
        return folder
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(**{**CLIP_L, "num_hidden_layers": layers})).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(folder)
    return folder


def mc_batch(model, frames: int, side: int, options: int = 4) -> dict:
    """One multiple-choice item: ``frames`` random uint8 frames and ``options`` prompt+option rows, as the collator
    builds them (the placeholder where the visual tokens go, only the option's tokens scored)."""
    tok = model.tokenizer
    question = tok("What colour is the shape that appears in the video?", add_special_tokens=False).input_ids
    rows, labels = [], []
    for k in range(options):
        answer = tok(f" option {k}", add_special_tokens=False).input_ids
        rows.append([model.placeholder_id, *question, *answer])
        labels.append([-100] * (1 + len(question)) + answer)
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    g = torch.Generator().manual_seed(0)
    return {"frames": torch.randint(0, 256, (1, frames, 3, side, side), dtype=torch.uint8, generator=g),
            "frame_mask": torch.ones(1, frames, dtype=torch.bool),
            "frame_times": torch.arange(frames, dtype=torch.float32)[None],
            "question_ids": torch.tensor([question]), "question_mask": torch.ones(1, len(question), dtype=torch.bool),
            "option_ids": ids, "option_mask": ids != tok.pad_token_id, "option_labels": lab,
            "num_options": torch.tensor([options])}


def bvllm_spec(llm: Path) -> dict:
    """``experiments/reducers/bvllm.yaml``'s reducer, with the question vocabulary ``lit_bvllm`` links from the
    question tokenizer (the LLM's here: ``mc_batch`` asks in it) when no Q-Former checkpoint is named."""
    from lit_bvllm.backbones import VIDEO_TOKEN, load_tokenizer

    spec = yaml.safe_load((REPO / "experiments/reducers/bvllm.yaml").read_text())["model"]["reducer"]
    if not spec["init_args"].get("qformer"):
        spec["init_args"].setdefault("vocab_size", len(load_tokenizer(str(llm), VIDEO_TOKEN)))
    return spec


def point(frames: int, chunk: int, tower: Path, llm: Path, device: str = "cpu", dtype: str = "float32",
          one_pass: bool = False) -> dict:
    """One evaluation forward at ``frames`` frames, ``chunk`` frames per tower call, in this process; ``one_pass``:
    every frame's patches kept (as before issue 25), else B-VLLM's two passes ([CLS] of every frame, then the
    patches of the frames it picks)."""
    from peak_memory import peak_memory, tensors

    from lit_bvllm.model import VideoLLM, reducer_factory

    spec = bvllm_spec(llm)
    torch.manual_seed(0)
    model = VideoLLM(str(llm), str(tower), reducer_factory(spec), vision_chunk=chunk).eval()
    model.two_pass = not one_pass
    model.to(device=device, dtype=getattr(torch, dtype))
    batch = {k: v.to(device) for k, v in mc_batch(model, frames, CLIP_L["image_size"]).items()}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    (scores, info), peak = peak_memory(lambda: model.option_scores(batch), model, *tensors(batch), device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak["cuda_max_allocated"] = torch.cuda.max_memory_allocated() / MIB
    seconds = time.perf_counter() - t0
    assert torch.isfinite(scores).all(), scores
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"frames": frames, "chunk": chunk, "two_pass": not one_pass, "peak_mib": peak["total"],
            "peak_by_kind_mib": peak,
            "parameters_mib": params / MIB, "frames_mib": batch["frames"].numel() / MIB,
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "max_rss_before_mib": rss0 / 1024, "visual_tokens": int(info["num_tokens"].max()),
            "frames_kept": int((info["kept_frames"] >= 0).sum()) if "kept_frames" in info else None,
            "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--chunks", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--layers", type=int, default=CLIP_L["num_hidden_layers"],
                    help="tower depth (CLIP-L: 24); the width, patch grid and processor stay CLIP-L's")
    ap.add_argument("--tower", type=Path, help="where the tower is written (default artifacts/bench/"
                                                 "clip_l14_336_random[_<layers>l])")
    ap.add_argument("--llm", type=Path, default=REPO / "artifacts/tiny/llm")
    ap.add_argument("--out", type=Path, default=REPO / "artifacts/bench/memory.json")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (then --frames 3600 runs the hour itself)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="the model's weights")
    ap.add_argument("--one-pass", action="store_true", help="keep every frame's patches (the path before issue 25)")
    ap.add_argument("--point", type=int, nargs=2, metavar=("FRAMES", "CHUNK"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.tower = a.tower or REPO / "artifacts/bench" / ("clip_l14_336_random" + (
        "" if a.layers == CLIP_L["num_hidden_layers"] else f"_{a.layers}l"))
    if a.point:  # a child: one point, as JSON on the last line
        print(json.dumps(point(*a.point, a.tower, a.llm, a.device, a.dtype, a.one_pass)))
        return
    if not (a.llm / "config.json").is_file():
        sys.exit(f"no LLM at {a.llm}: run `make tiny` (or `make demo`) first, or pass --llm")
    clip_l_tower(a.tower, a.layers)
    rows = []
    for chunk in a.chunks:
        for frames in a.frames:
            if frames < chunk and chunk != min(a.chunks):
                continue  # a chunk larger than the video is the smaller chunk's point
            out = subprocess.run([sys.executable, __file__, "--point", str(frames), str(chunk), "--tower", str(a.tower),
                                  "--llm", str(a.llm), "--device", a.device, "--dtype", a.dtype,
                                  *(["--one-pass"] if a.one_pass else [])],
                                 capture_output=True, text=True, check=False)
            if out.returncode:
                sys.exit(f"point {frames} frames / chunk {chunk} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{frames:5d} frames, chunk {chunk:3d}: peak {r['peak_mib']:8.0f} MiB (frames {r['frames_mib']:.0f}, "
                  f"parameters {r['parameters_mib']:.0f}), max RSS {r['max_rss_mib']:.0f} MiB, "
                  f"{r['visual_tokens']} visual tokens, {r['seconds']:.0f} s", flush=True)
    # the hour: the largest point of the largest chunk, plus the bytes per frame measured between the two longest
    # videos of the smallest chunk (shorter ones can peak in another phase of the forward, with other fixed costs)
    big = max((r for r in rows if r["chunk"] == max(a.chunks)), key=lambda r: r["frames"])
    small = sorted((r for r in rows if r["chunk"] == min(a.chunks)), key=lambda r: r["frames"])[-2:]
    if len(small) < 2:
        sys.exit("--frames needs two lengths at the smallest chunk to measure the bytes per frame")
    slope = (small[1]["peak_mib"] - small[0]["peak_mib"]) / (small[1]["frames"] - small[0]["frames"])
    hour = big["peak_mib"] + slope * (HOUR - big["frames"])
    result = {"date": time.strftime("%Y-%m-%d"), "two_pass": not a.one_pass, "tower_layers": a.layers,
              "device": a.device, "dtype": a.dtype,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "torch": torch.__version__, "command": " ".join(["python", "benchmarks/bench_memory.py", *sys.argv[1:]]),
              "points": rows, "mib_per_frame": slope, "hour_peak_mib": hour}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(f"per extra frame: {slope:.2f} MiB; an hour at 1 fps ({HOUR} frames, chunk {big['chunk']}): "
          f"{hour / 1024:.1f} GiB peak in tensors -> {a.out}")


if __name__ == "__main__":
    main()

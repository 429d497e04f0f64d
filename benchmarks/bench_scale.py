"""What each reducer hands the LLM at real scale, and what that costs: tokens per sample and prefill FLOPs of
Qwen2-7B, frames the vision tower encodes and its FLOPs, for CLIP-L/14-336, SigLIP-so400m/14-384 and EVA ViT-g/14
(224) shapes and 16 to 3,600 frames (an hour at 1 fps). No weight is loaded or downloaded.

    python benchmarks/bench_scale.py [--out artifacts/bench/scale.md] [--frames 16 64 256 1024 3600]

- the LLM and the towers are built from their published config numbers on the meta device (parameter counts);
- token counts come from the suite's reducers themselves, run forward on random features with the settings of
  ``experiments/reducers/*.yaml`` (the papers' budgets; arguments tied to the tower's patch grid follow the tower),
  at a small width: how many tokens a reducer emits does not depend on the width or the Q-Former's size;
- FLOPs count a multiply-add as 2: a transformer over n tokens costs 2 n P (P: its non-embedding parameters) plus
  attention, 4 L n² d for the vision encoder (bidirectional) and 2 L n² d for the LLM's causal prefill.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
WIDTH = 32  # the features' width for counting tokens
QFORMER = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "vocab_size": 1000}  # counting only
TEXT = 24  # question tokens

# published config numbers (config.json of each checkpoint)
LLM = {"name": "Qwen2-7B", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
       "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064}
TOWERS = {
    "CLIP-L/14-336": dict(kind="clip", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                          num_attention_heads=16, image_size=336, patch_size=14),
    "SigLIP-so400m/14-384": dict(kind="siglip", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                 num_attention_heads=16, image_size=384, patch_size=14),
    "EVA ViT-g/14 (224)": dict(kind="clip", hidden_size=1408, intermediate_size=6144, num_hidden_layers=39,
                               num_attention_heads=16, image_size=224, patch_size=14),
}
REDUCERS = ["bvllm", "uniform", "llamavid", "meanpool", "tokenlearner", "gttm", "weighted_sampler", "identity"]


def llm_params() -> int:
    """Qwen2-7B's non-embedding parameters, counted on the meta device."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**{k: v for k, v in LLM.items() if k != "name"}, tie_word_embeddings=False)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(cfg)
    embed = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - embed


def tower_params(spec: dict) -> int:
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    args = {k: v for k, v in spec.items() if k != "kind"}
    cls, cfg = ((CLIPVisionModel, CLIPVisionConfig(**args)) if spec["kind"] == "clip"
                else (SiglipVisionModel, SiglipVisionConfig(**args)))
    with torch.device("meta"):
        model = cls(cfg)
    return sum(p.numel() for p in model.parameters())


def reducer_args(name: str, grid: int) -> tuple[str, dict]:
    """Class path and init args of experiments/reducers/<name>.yaml, tied to a ``grid`` x ``grid`` tower."""
    spec = yaml.safe_load((REPO / "experiments" / "reducers" / f"{name}.yaml").read_text())["model"]["reducer"]
    args = dict(spec["init_args"])
    n = grid * grid
    for key in ("num_patches", "tokens_per_frame"):
        if key in args and args[key] == 576:  # the CLIP-L/336 grid the configs are written for
            args[key] = n
    if name == "uniform":  # pooled 24 -> 8x8, 27 -> 9x9, 16 -> 8x8 tokens per frame; as many frames as θ holds
        args["pool"] = 3 if grid % 3 == 0 else 2
        args["num_frames"] = min(args["num_frames"], args["budget"] // (grid // args["pool"]) ** 2)
    if "hidden_size" in args:
        args.update(QFORMER, qformer=None)
    return spec["class_path"], args


def count(class_path: str, args: dict, frames: int, grid: int) -> tuple[int, int]:
    """(tokens handed to the LLM, frames the tower encodes) for one sample of ``frames`` frames."""
    import importlib

    module, name = class_path.rsplit(".", 1)
    reducer = getattr(importlib.import_module(module), name)(WIDTH, **args).eval()
    n = grid * grid
    mask = torch.ones(1, frames, dtype=torch.bool)
    keep = reducer.frames_to_encode(mask)
    t = int(keep.sum())
    g = torch.Generator().manual_seed(0)
    x = dict(frames=torch.randn(1, t, n, WIDTH, generator=g), cls=torch.randn(1, t, WIDTH, generator=g),
             frame_mask=torch.ones(1, t, dtype=torch.bool),
             text_ids=torch.randint(1, QFORMER["vocab_size"], (1, TEXT), generator=g),
             text_mask=torch.ones(1, TEXT, dtype=torch.long),
             cls_attn=torch.softmax(torch.randn(1, t, n, generator=g), -1))
    with torch.no_grad():
        out = reducer(**x)
    return int(out.token_mask.sum()), t


def flops(params: int, layers: int, width: int, tokens: int, causal: bool) -> float:
    return 2 * params * tokens + (2 if causal else 4) * layers * tokens**2 * width


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256, 1024, 3600])
    ap.add_argument("--text", type=int, default=128, help="text tokens of the prompt beside the visual ones")
    ap.add_argument("--out", default="artifacts/bench/scale.md")
    a = ap.parse_args()
    p_llm = llm_params()
    lines = [f"Qwen2-7B: {p_llm / 1e9:.2f} B non-embedding parameters; prefill over visual tokens + {a.text} text "
             "tokens. Tower TFLOPs: every frame the reducer reads, encoded once.", ""]
    for tower, spec in TOWERS.items():
        grid = spec["image_size"] // spec["patch_size"]
        p_tower = tower_params(spec)
        per_frame = flops(p_tower, spec["num_hidden_layers"], spec["hidden_size"], grid * grid + 1, causal=False)
        lines += [f"### {tower}: {grid}x{grid} = {grid * grid} patches, {p_tower / 1e6:.0f} M parameters, "
                  f"{per_frame / 1e9:.0f} GFLOPs per frame", "",
                  "| reducer | " + " | ".join(f"{t} frames" for t in a.frames) + " |",
                  "|---|" + "---|" * len(a.frames)]
        for name in REDUCERS:
            class_path, args = reducer_args(name, grid)
            cells = []
            for t in a.frames:
                tokens, encoded = count(class_path, args, t, grid)
                llm = flops(p_llm, LLM["num_hidden_layers"], LLM["hidden_size"], tokens + a.text, causal=True)
                vis = encoded * per_frame
                cells.append(f"{tokens:,} tok · LLM {llm / 1e12:.1f} · tower {vis / 1e12:.1f} ({encoded} fr)")
            lines.append(f"| {class_path.rsplit('.', 1)[1]} | " + " | ".join(cells) + " |")
        lines.append("")
    meta = (f"{datetime.date.today()}, {platform.machine()}, torch {torch.__version__}; "
            f"`python benchmarks/bench_scale.py --frames {' '.join(map(str, a.frames))}`")
    text = "\n".join(["Cells: visual tokens handed to the LLM · its prefill TFLOPs · the tower's TFLOPs (frames "
                      "encoded).", "", *lines, meta, ""])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Linear probes of a pretrained Q-Former's query outputs: does the content of a frame get through it?

    python benchmarks/probe_qformer.py --qformer artifacts/tiny/qformer --vision_tower artifacts/tiny/vision \
        --data artifacts/synthetic --out artifacts/probe_qformer.json

The frames are those of ``lit_bvllm probe-tower`` (:mod:`lit_bvllm.analysis.probe`): the synthetic set's training videos
fit the probes, its held-out eval videos test them, at 1 fps through the suite's reader and frame transform. Each
frame's [CLS] and patch tokens at the layer the video LLM reads (-2) go through the Q-Former's LayerNorm
(``vision_model.post_layernorm``, InstructBLIP's ``ln_vision``) and the Q-Former with a neutral instruction; the
features are its first ``--num_queries`` query outputs (R = 8: what B-VLLM's spatial sampling reads), their mean
and their concatenation, and their mean when the Q-Former sees the patches alone (as B-VLLM's spatial Q-Former
does). Targets: background colour (every frame), needle presence, its shape and colour (needle frames). Rows: the
Q-Former(s), the tower's [CLS] token, and a randomly initialised Q-Former of the same shape as the control.

Probes of standardised features (as ``probe-tower``'s) find the content even in a random Q-Former's outputs, where
it is a sliver of their scale; two more columns say how readable it is: the *frame share* (the share of the
features' energy that varies from frame to frame, :func:`lit_bvllm.analysis.probe.frame_share`) and the same probes
on the raw features (``raw ...``: content carried by a small share needs large weights, which the L2 penalty
charges).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import Tensor

COLUMNS = ("background_accuracy", "needle_accuracy", "needle_recall", "shape_accuracy", "colour_accuracy")
RAW = ("background_accuracy", "needle_accuracy", "shape_accuracy", "colour_accuracy")  # probes of the raw features


@torch.no_grad()
def query_features(qformer, ln_vision, tokens: Tensor, question: dict, num_queries: int, batch: int = 1024
                   ) -> dict[str, Tensor]:
    """``tokens (n, 1 + N, D)`` -> ``mean (n, H)`` and ``concat (n, k*H)`` of the first ``num_queries`` query outputs
    with [CLS] and patches, and ``mean_patches (n, H)`` with the patches alone; ``question`` is the tokenized
    instruction (``input_ids``, ``attention_mask`` of one text)."""
    qformer.eval()
    ids = torch.tensor([question["input_ids"]])
    mask = torch.tensor([question["attention_mask"]])
    out = {"mean": [], "concat": [], "mean_patches": []}
    for i in range(0, len(tokens), batch):  # chunks of frames, each one Q-Former call
        x = ln_vision(tokens[i : i + batch])
        n = len(x)
        both = qformer(num_queries, x, torch.ones(x.shape[:2], dtype=torch.bool), ids.expand(n, -1), mask.expand(n, -1))
        alone = qformer(num_queries, x[:, 1:], torch.ones(n, x.shape[1] - 1, dtype=torch.bool), ids.expand(n, -1),
                        mask.expand(n, -1))
        out["mean"].append(both.mean(1))
        out["concat"].append(both.flatten(1))  # (n, k, H) -> (n, k*H)
        out["mean_patches"].append(alone.mean(1))
    return {k: torch.cat(v) for k, v in out.items()}


def load_qformer(path: str | None, width: int, like: str | None = None, seed: int = 0):
    """``(TextQFormer, ln_vision)`` of an InstructBLIP-layout folder, or, with ``path=None``, a randomly initialised
    pair of the shape of the folder ``like`` (the control)."""
    from lit_bvllm.reducers.qformer import TextQFormer, vision_layernorm

    cfg = json.loads((Path(path or like) / "config.json").read_text())
    num_queries = cfg["num_query_tokens"]
    if path is not None:
        return TextQFormer(width, num_queries, pretrained=path).eval(), vision_layernorm(width, path)
    q = cfg["qformer_config"]
    torch.manual_seed(seed)
    qformer = TextQFormer(width, num_queries, q["hidden_size"], q["num_hidden_layers"], q["num_attention_heads"],
                          q["vocab_size"], q["cross_attention_frequency"], q["max_position_embeddings"])
    return qformer.eval(), torch.nn.LayerNorm(width)


def probe_qformer(qformers: list[str], vision_tower: str, data: str, out: str | None = None,
                  instruction: str = "Describe this frame.", num_queries: int = 8, fps: float = 1.0,
                  max_frames: int | None = 128, max_videos: int | None = None, transform: str = "processor",
                  random_control: bool = True, seed: int = 0) -> dict:
    """Probe each Q-Former folder in ``qformers`` (and a random one, and the tower's [CLS]); write and return the
    table (``rows``: name -> metrics)."""
    from datamodules.io import write_json
    from datamodules.loading import load_tokenizer
    from datamodules.transforms import FrameTransform
    from lit_bvllm.analysis.probe import encode_videos, frame_share, probe_row
    from lit_bvllm.vision import VisionEncoder

    t0 = time.time()
    root = Path(data)
    videos = json.loads((root / "metadata.json").read_text())["videos"]
    train = [r for r in videos if r["split"] == "train"][:max_videos]
    test = [r for r in videos if r["split"] == "eval"][:max_videos]
    encoder = VisionEncoder(vision_tower, -2)
    tf = FrameTransform(transform, vision_tower)
    train_x, train_y = encode_videos(train, root, encoder, tf, fps, max_frames, tokens=True)
    test_x, test_y = encode_videos(test, root, encoder, tf, fps, max_frames, tokens=True)
    print(f"encoded {len(train_y['needle'])} training / {len(test_y['needle'])} held-out frames in "
          f"{time.time() - t0:.0f} s", flush=True)
    def row(xtr: Tensor, xte: Tensor) -> dict:
        raw = probe_row(xtr, train_y, xte, test_y, background=True, standardise=False)
        return {"frame_share": round(frame_share(xtr), 4), **probe_row(xtr, train_y, xte, test_y, background=True),
                **{f"raw_{c}": raw[c] for c in RAW}}

    rows = {"tower [CLS]": row(train_x["cls"], test_x["cls"])}
    sources = [(Path(q).name, q) for q in qformers] + ([("random Q-Former", None)] if random_control else [])
    for name, path in sources:
        qformer, ln = load_qformer(path, encoder.width, like=qformers[0], seed=seed)
        tok = load_tokenizer(Path(path or qformers[0]) / "qformer_tokenizer", video_token=None)
        question = tok(instruction, add_special_tokens=True)
        ftr = query_features(qformer, ln, train_x["tokens"], question, num_queries)
        fte = query_features(qformer, ln, test_x["tokens"], question, num_queries)
        for feat in ftr:
            rows[f"{name}: {feat} of {num_queries} queries"] = row(ftr[feat], fte[feat])
    result = {"qformers": qformers, "vision_tower": vision_tower, "data": str(root), "instruction": instruction,
              "num_queries": num_queries, "frames": {"train": len(train_y["needle"]), "test": len(test_y["needle"])},
              "needle_frames": {"train": int(train_y["needle"].sum()), "test": int(test_y["needle"].sum())},
              "rows": rows, "seconds": round(time.time() - t0, 1)}
    if out:
        write_json(Path(out), result)
    print(table(result) + (f"\nwritten to {out}" if out else ""))
    return result


def table(result: dict) -> str:
    """The probe results as a Markdown table, one row per feature set."""
    cols = ("frame_share", *COLUMNS, *(f"raw_{c}" for c in RAW))
    lines = ["| features | " + " | ".join(c.replace("_accuracy", "").replace("_", " ") for c in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from lit_bvllm.cli import setup_process

    setup_process()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qformer", nargs="+", required=True,
                   help="InstructBLIP-layout Q-Former folder(s) (make-tiny's qformer)")
    p.add_argument("--vision_tower", required=True, help="the tower the Q-Former reads (make-tiny's vision)")
    p.add_argument("--data", required=True, help="a make-synthetic folder (its metadata.json)")
    p.add_argument("--out", default=None, help="JSON file to write")
    p.add_argument("--instruction", default="Describe this frame.", help="the instruction beside the queries")
    p.add_argument("--num_queries", type=int, default=8, help="the first k queries probed (B-VLLM's R = 8)")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--max_frames", type=int, default=128, help="the most frames taken from one video")
    p.add_argument("--max_videos", type=int, default=None, help="at most this many training and eval videos")
    p.add_argument("--transform", default="processor", choices=("processor", "plain"))
    p.add_argument("--no_random", action="store_true", help="leave out the random Q-Former control")
    a = p.parse_args(argv)
    return probe_qformer(a.qformer, a.vision_tower, a.data, a.out, a.instruction, a.num_queries, a.fps, a.max_frames,
                         a.max_videos, a.transform, not a.no_random)


if __name__ == "__main__":
    main()

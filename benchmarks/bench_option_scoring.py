"""Option scoring with the video prefix run once per item, against once per option (issue 25, item 1).

    python benchmarks/bench_option_scoring.py [--root DIR] [--items 48] [--passes 3] [--out FILE]

1. **Requests/s on the demo's needle set** (a request: one question, its circular tries scored once), likelihood mode
   (``experiments/eval/needle.yaml`` composed after the demo's configs: make-tiny's backbones under
   ``DIR/artifacts``, pretrain.yaml's B-VLLM; the weights do not change the cost, so no checkpoint is read):
   ``VideoLLM.option_scores`` (the prefix once, the options continuing from its KV cache) against
   ``VideoLLM.option_scores_unshared`` (one full row per option), on the same decoded batches, alternating, the
   median of ``--passes``; the largest score difference between the two is printed too. On a CPU the ratio is the
   number to read.
2. **The needle set's evaluation, end to end** (``lit_bvllm test``'s loop in-process: decoding, tower, reducer,
   scoring, records; one worker-less process): before (one sample per item, one LLM row per option), with the
   shared prefix, and with identical requests scored once too (issue 25, item 2: VNBench's 4 circular tries are
   one request in likelihood mode). Items/s of each, one pass each, in that order.
3. **A Qwen2-7B-shaped LLM** (its published config; parameters counted on the meta device, no weights): the FLOPs
   of each path's LLM calls for one item of 768 visual tokens (B-VLLM's paper budget) + a 40-token prompt and 4 or
   5 options of 6 tokens (:func:`qwen2_7b_flops` says how they are counted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
QWEN2_7B = {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
            "num_key_value_heads": 4, "vocab_size": 152064}  # config.json of Qwen2-7B-Instruct


def needle_cli(items: int, save_dir: str):
    """``lit_bvllm test`` on the needle set (the demo's configs, make-tiny's backbones, untrained), not run; in the
    folder whose ``artifacts/`` the configs name, as make demo runs them."""
    from lit_bvllm.cli.commands import lightning_cli

    configs = ["pretrain.yaml", "finetune.yaml", "eval/base.yaml", "eval/needle.yaml"]
    args = [a for c in configs for a in ("--config", str(REPO / "experiments" / c))]
    return lightning_cli([*args, "--model.init_from", "null", "--data.limit", str(items), "--data.num_workers", "0",
                          "--data.batch_size", "4", "--trainer.logger.init_args.save_dir", save_dir,
                          "--trainer.enable_progress_bar", "false"], run=False)


def time_evaluation(root: Path, items: int) -> dict:
    """Items/s of the needle set's test loop: before, shared prefix, shared prefix + identical requests once."""
    from unittest import mock

    import datamodules.benchmarks.datamodule as dmod
    from lit_bvllm.model import VideoLLM

    singles = mock.patch.object(dmod, "identical_requests", lambda its, refused: [[i] for i in range(len(its))])
    unshared = mock.patch.object(VideoLLM, "option_scores", VideoLLM.option_scores_unshared)
    variants = {"before (per item, a row per option)": [singles, unshared], "shared prefix": [singles],
                "shared prefix + requests once": []}
    out = {}
    with contextlib.chdir(root):
        for name, patches in variants.items():
            with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
                for p in patches:
                    stack.enter_context(p)
                cli = needle_cli(items, tmp)
                t0 = time.perf_counter()
                cli.trainer.test(cli.model, datamodule=cli.datamodule)
                seconds = time.perf_counter() - t0
                result = json.loads(next(Path(tmp).rglob("vnbench_results.json")).read_text())
            out[name] = {"seconds": seconds, "items": result["evaluated"], "items_per_s": result["evaluated"] / seconds,
                         "circular_accuracy": result["circular_accuracy"]}
    base = out["before (per item, a row per option)"]["seconds"]
    for v in out.values():
        v["speedup"] = base / v["seconds"]
    return out


def needle_batches(root: Path, items: int):
    """The demo's model (untrained reducer, make-tiny's backbones) and the needle set's first ``items`` items in
    likelihood mode, decoded once."""
    with contextlib.chdir(root), tempfile.TemporaryDirectory() as tmp:
        cli = needle_cli(items, tmp)
        cli.model.configure_model()
        cli.datamodule.setup("test")
        batches = list(cli.datamodule.test_dataloader())
    return cli.model.model.eval(), batches


def time_paths(model, batches, passes: int) -> dict:
    times = {"shared": [], "unshared": []}
    diff = 0.0
    with torch.no_grad():
        for _ in range(passes):
            for name, fn in (("shared", model.option_scores), ("unshared", model.option_scores_unshared)):
                t0 = time.perf_counter()
                scores = [fn(b)[0] for b in batches]
                times[name].append(time.perf_counter() - t0)
                if name == "shared":
                    shared = scores
                else:
                    diff = max(diff, max(float((a - b)[~a.isinf()].abs().max()) for a, b in zip(shared, scores)))
    requests = sum(len(b["num_options"]) for b in batches)  # the loader's samples: a question's 4 tries are one
    rows = sum(int(b["num_options"].sum()) for b in batches)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"requests": requests, "option_rows": rows, "seconds": med,
            "requests_per_s": {k: requests / v for k, v in med.items()}, "speedup": med["unshared"] / med["shared"],
            "max_abs_score_difference": diff}


def qwen2_7b_flops(visual: int = 768, prompt: int = 40, option: int = 6, options=(4, 5)) -> dict:
    """TFLOPs of each path's LLM calls for one item on Qwen2-7B: its linear layers (2 x non-embedding parameters
    per token, counted on a meta-device model), causal attention (4 x layers x width per query and key) and the
    output layer (2 x width x vocabulary per position whose logits are computed: every position of every row in
    the one-row-per-option path, the prefix's last and the options' in the shared one)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):
        llm = Qwen2ForCausalLM(Qwen2Config(**QWEN2_7B, tie_word_embeddings=False))
    h, v, layers = QWEN2_7B["hidden_size"], QWEN2_7B["vocab_size"], QWEN2_7B["num_hidden_layers"]
    params = sum(p.numel() for p in llm.parameters()) - 2 * h * v  # without the input and output embeddings

    def run(tokens: int, keys_before: int, logits: int) -> float:  # a row of `tokens` after `keys_before` cached
        attention = 4 * layers * h * sum(keys_before + i for i in range(1, tokens + 1))
        return 2 * params * tokens + attention + 2 * h * v * logits

    prefix = visual + prompt
    out = {}
    for k in options:
        unshared = k * run(prefix + option, 0, prefix + option)
        shared = run(prefix, 0, 1) + k * run(option, prefix, option)
        out[f"{k} options"] = {"unshared": unshared / 1e12, "shared": shared / 1e12, "ratio": unshared / shared}
    return {"tokens": {"visual": visual, "prompt": prompt, "option": option}, "params_non_embedding": params,
            "tflops": out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=".", help="the folder whose artifacts/ holds make demo's tiny backbones and data")
    p.add_argument("--items", type=int, default=48, help="needle-set items (whole circular groups)")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--out", default="artifacts/bench/option_scoring.json")
    a = p.parse_args()
    torch.manual_seed(0)
    model, batches = needle_batches(Path(a.root).resolve(), a.items)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
                         f"{torch.__version__}", "needle_set": time_paths(model, batches, a.passes),
              "needle_evaluation": time_evaluation(Path(a.root).resolve(), a.items), "qwen2_7b": qwen2_7b_flops()}
    print(json.dumps(result, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

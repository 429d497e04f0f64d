"""Can the LLM read its context? The upper bound of what any visual path can give it, on the synthetic needle set.

For every VNBench item of the synthetic set, the video's true text description (the generator's caption of its
metadata record) is put where the visual tokens go (``<description>\\n<question>`` as the user turn, the option
continuations scored by mean token log-likelihood, as ``--data.mode likelihood`` scores them). Three conditions:

- ``description``: the item's own video's description,
- ``other description``: another video's (same length and style, wrong content),
- ``none``: the bare question (the blind baseline of the LLM alone).

Circular accuracy per task type: an item group counts when all of its tries are right (VNBench's rule).
If ``description`` is no better than ``none``, no projector or reducer can make the model read the video: the
LLM cannot use its context. The second check says why: on a random sequence of the vocabulary's words repeated
twice, an LLM with induction heads predicts the second copy far better than the first.

    .venv/bin/python benchmarks/llm_reads_context.py --llm artifacts/tiny/llm --data artifacts/synthetic
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.benchmarks import VNBench
from lit_bvllm.backbones import load_llm, load_tokenizer
from lit_bvllm.world.describe import caption

CONDITIONS = ("description", "other description", "none")


@torch.no_grad()
def option_scores(llm, tok, user: str, options: list[str]) -> list[float]:
    """Mean token log-likelihood of each option as the assistant's answer to ``user`` (one batch per item)."""
    prompt = tok(tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    conts = [tok(o + tok.eos_token, add_special_tokens=False)["input_ids"] for o in options]
    n = len(prompt) + max(len(c) for c in conts)
    ids = torch.full((len(options), n), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for k, c in enumerate(conts):
        ids[k, : len(prompt) + len(c)] = torch.tensor(prompt + c)
        mask[k, : len(prompt) + len(c)] = 1
    logp = F.log_softmax(llm(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
    tok_logp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return [tok_logp[k, len(prompt) - 1 : len(prompt) - 1 + len(c)].mean().item() for k, c in enumerate(conts)]


@torch.no_grad()
def repeat_gain(llm, tok, words: list[str], trials: int = 32, length: int = 16, seed: int = 0) -> dict:
    """Mean next-token loss on the first and on the second copy of a random word sequence repeated twice."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for _ in range(trials):
        seq = " ".join(words[i] for i in rng.integers(len(words), size=length))
        a = tok(seq, add_special_tokens=False)["input_ids"]
        b = tok(" " + seq, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([a + b])
        loss = F.cross_entropy(llm(input_ids=ids).logits[0, :-1].float(), ids[0, 1:], reduction="none")
        first.append(loss[: len(a) - 1].mean().item())
        second.append(loss[len(a) - 1 :].mean().item())
    return {"first_copy_loss": round(float(np.mean(first)), 3), "second_copy_loss": round(float(np.mean(second)), 3)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llm", default="artifacts/tiny/llm")
    ap.add_argument("--data", default="artifacts/synthetic", help="make-synthetic's output folder")
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args(argv)
    data = Path(args.data)
    tok, llm = load_tokenizer(args.llm), load_llm(args.llm).eval()
    records = {Path(v["path"]).name: v for v in json.loads((data / "metadata.json").read_text())["videos"]}
    items = VNBench(str(data / "eval" / "vnbench")).read()
    videos = sorted({Path(it.video).name for it in items})
    described = {v: caption(records[v]) for v in videos}
    other = {v: described[videos[(k + 1) % len(videos)]] for k, v in enumerate(videos)}
    every_frame = {it.category for it in items if it.extra.get("every_frame")}  # bg_every1: not in "overall"
    groups = {c: defaultdict(list) for c in CONDITIONS}
    for it in items:
        v = Path(it.video).name
        for cond, ctx in zip(CONDITIONS, (described[v], other[v], "")):
            scores = option_scores(llm, tok, f"{ctx}\n{it.question}" if ctx else it.question, list(it.options))
            groups[cond][(it.category, it.group)].append(int(np.argmax(scores)) == it.answer)
    result = {"llm": args.llm, "items": len(items), "videos": len(videos), "circular_accuracy": {}}
    for cond, by_group in groups.items():
        per_type = defaultdict(list)
        for (category, _), right in by_group.items():
            per_type[category].append(all(right))
        row = {t: round(float(np.mean(v)), 3) for t, v in sorted(per_type.items())}
        needle = [all(r) for (category, _), r in by_group.items() if category not in every_frame]
        row["overall"] = round(float(np.mean(needle)), 3)  # the needle types, as VNBench's overall (no every-frame)
        result["circular_accuracy"][cond] = row
    from lit_bvllm.world.tiny import _WORDS

    result["repeated_words"] = repeat_gain(llm, tok, sorted(set(_WORDS)))
    types = [*sorted(t for t in next(iter(result["circular_accuracy"].values())) if t != "overall"), "overall"]
    print(f"{args.llm}: circular accuracy on {len(items)} needle items ({len(videos)} videos), the LLM alone")
    print("| context | " + " | ".join(types) + " |")
    print("|---|" + "---|" * len(types))
    for cond, row in result["circular_accuracy"].items():
        print(f"| {cond} | " + " | ".join(f"{row[t]:.3f}" for t in types) + " |")
    r = result["repeated_words"]
    print(f"random words repeated twice: loss {r['first_copy_loss']:.3f} on the first copy, "
          f"{r['second_copy_loss']:.3f} on the second")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

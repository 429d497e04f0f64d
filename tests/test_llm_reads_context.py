"""benchmarks/llm_reads_context.py: the text-oracle check of whether an LLM reads its context."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.benchmarks import VNBench
from lit_bvllm.backbones import load_llm, load_tokenizer

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "llm_reads_context.py"


def _script():
    spec = importlib.util.spec_from_file_location("llm_reads_context", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_option_scores_match_one_unpadded_pass_per_option(tiny):
    mod = _script()
    tok, llm = load_tokenizer(tiny["llm"]), load_llm(tiny["llm"]).eval()
    options = ["a red star", "a blue diamond shape", "no"]  # ragged lengths: the batch is right-padded
    got = mod.option_scores(llm, tok, "A video with a gray background.\nWhich shape appears?", options)
    prompt = tok(tok.apply_chat_template([{"role": "user", "content": "A video with a gray background.\nWhich shape "
                                          "appears?"}], tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    for o, score in zip(options, got):
        cont = tok(o + tok.eos_token, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + cont])
        with torch.no_grad():
            logp = F.log_softmax(llm(input_ids=ids).logits[0, :-1], -1)
        want = logp[len(prompt) - 1 :].gather(-1, ids[0, len(prompt) :, None]).mean().item()
        assert abs(score - want) < 1e-4


def test_report_covers_every_item_and_condition(tiny, synthetic, tmp_path, capsys):
    mod = _script()
    out = tmp_path / "reads.json"
    result = mod.main(["--llm", tiny["llm"], "--data", str(synthetic), "--out", str(out)])
    items = VNBench(str(Path(synthetic) / "eval" / "vnbench")).read()
    assert result["items"] == len(items) and json.loads(out.read_text()) == result
    groups = {it.group for it in items if not it.extra.get("every_frame")}
    types = {it.category for it in items}
    needle_types = {it.category for it in items if not it.extra.get("every_frame")}
    assert "bg_every1" in types - needle_types
    assert set(result["circular_accuracy"]) == set(mod.CONDITIONS)
    for row in result["circular_accuracy"].values():
        assert set(row) == types | {"overall"}
        # a share of whole circular needle groups: a multiple of 1/len(groups); the every-frame type is left out,
        # as VNBench's overall leaves it out (each needle type has as many groups, so it is their mean)
        assert abs(row["overall"] * len(groups) - round(row["overall"] * len(groups))) < 0.02
        assert abs(row["overall"] - np.mean([row[t] for t in needle_types])) < 2e-3
    r = result["repeated_words"]
    assert r["first_copy_loss"] > 0 and r["second_copy_loss"] > 0
    printed = capsys.readouterr().out
    assert "| description |" in printed and "| none |" in printed

"""The tiny pretrained Q-Former: its objectives' masks, the InstructBLIP folder it writes, and its probe."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from lit_bvllm.reducers.qformer import TextQFormer, vision_layernorm
from lit_bvllm.world.tiny_qformer import (
    QA_KINDS,
    QFormerPretraining,
    build_data,
    frame_qa,
    generation_mask,
    make_tiny_qformer,
    pretrain_qformer,
    save_qformer,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from probe_qformer import COLUMNS, probe_qformer  # noqa: E402

SHAPE = dict(num_queries=16, hidden_size=64, num_layers=2, num_heads=4, vocab_size=2048)


@pytest.fixture(scope="module")
def folder(tiny, tmp_path_factory):
    """A few-step Q-Former folder over the session's few-step tower, every objective on."""
    out = tmp_path_factory.mktemp("qformer") / "qformer"
    result = make_tiny_qformer(out, tiny["vision"], tiny["llm"], steps=3, num_frames=48, batch_size=16,
                               objectives=("lm", "itc", "itm", "llm", "heads"))
    return out, result


def _record(needle: bool) -> dict:
    needles = [{"shape": "star", "colour": "blue", "position": [10.0, 10.0], "size": 6}] if needle else []
    return {"kind": "image", "width": 128, "height": 96, "needles": needles,
            "background": {"colours": ["navy"], "direction": "solid"},
            "distractors": [{"shape": "circle", "colour": "pink", "size": 5, "position": [60.0, 50.0]}]}


def test_frame_qa_answers_follow_the_record():
    with_needle = dict(frame_qa(_record(True), np.random.default_rng(0))[1:])
    assert len(frame_qa(_record(True), np.random.default_rng(0))) == QA_KINDS
    assert "It is a navy background." in with_needle.values()
    assert with_needle["What color is the star?"] == "It is blue."
    assert with_needle["Where is the shape?"] == "At the top left."
    assert "Yes, a blue star." in with_needle.values()
    without = frame_qa(_record(False), np.random.default_rng(0))
    assert without[0][1].startswith("no shape.") and without[2][1] == "No." and without[3][1] == "no shape."
    assert without[4][1].startswith("There is no ")


def test_generation_mask_hides_the_answer_from_the_queries_and_is_causal(tokenizer):
    torch.manual_seed(0)
    model = QFormerPretraining(TextQFormer(16, 8, 32, 2, 4, 2048), 16, len(tokenizer)).eval()
    visual, vmask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    ids, mask = torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    answer, amask = torch.tensor([[1, 11, 12, 2], [1, 13, 2, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    with torch.no_grad():
        z, hidden = model.run(4, visual, vmask, ids, mask, answer, amask)
        plain = model.qformer(4, model.ln_vision(visual), vmask, ids, mask)  # what the reducers compute
        torch.testing.assert_close(z, plain, atol=1e-5, rtol=0)
        later = answer.clone()
        later[:, -1] = 20  # a later answer token changes neither the queries nor the earlier answer positions
        z2, hidden2 = model.run(4, visual, vmask, ids, mask, later, amask)
        torch.testing.assert_close(z2, z, atol=1e-5, rtol=0)
        torch.testing.assert_close(hidden2[:, :-1], hidden[:, :-1], atol=1e-5, rtol=0)
        # the answer reads the queries
        _, hidden3 = model.run(4, torch.randn_like(visual), vmask, ids, mask, answer, amask)
    assert (hidden3 - hidden).abs().max() > 1e-6  # (bitwise equal for equal inputs)
    m = generation_mask(2, mask, amask, torch.float32)
    assert m.shape == (2, 1, 9, 9) and m[1, 0, 0, 4] < -1e30 and m[0, 0, 5, 6] < -1e30 and m[0, 0, 6, 5] == 0
    assert (m[:, 0, 5:, :2] == 0).all()  # every answer token sees every query


def test_the_folder_has_instructblips_layout(folder, tokenizer):
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration

    out, result = folder
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "instructblip" and cfg["num_query_tokens"] == 16
    q = cfg["qformer_config"]
    assert ((q["hidden_size"], q["num_hidden_layers"], q["num_attention_heads"], q["encoder_hidden_size"])
            == (64, 2, 4, 64))
    assert q["vocab_size"] >= len(tokenizer)
    assert ((cfg["vision_config"]["hidden_size"], cfg["vision_config"]["image_size"],
             cfg["vision_config"]["patch_size"]) == (64, 32, 8))
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    # the keys are those a real InstructBLIP's save_pretrained writes, its Q-Former part only
    full = set(InstructBlipForConditionalGeneration(InstructBlipConfig.from_pretrained(out)).state_dict())
    assert keys <= full
    assert keys == {k for k in full if k.startswith("qformer.")} | {
        "query_tokens", "vision_model.post_layernorm.weight", "vision_model.post_layernorm.bias"}
    from datamodules.loading import load_tokenizer

    qtok = load_tokenizer(out / "qformer_tokenizer", video_token=None)
    assert qtok("What shape is it?")["input_ids"] == tokenizer("What shape is it?")["input_ids"]
    assert result["steps"] == 3 and len(result["log"]) >= 1
    assert {"lm", "itc", "itm", "llm", "heads"} <= set(result["log"][-1])


def test_the_written_qformer_reloads_with_identical_outputs(tiny, tokenizer, tmp_path):
    torch.manual_seed(0)
    model = QFormerPretraining(TextQFormer(64, 16, 64, 2, 4, 2048), 64, len(tokenizer))
    records = [dict(_record(i % 2 == 0),
                    background={"colours": ["navy", "gray"][i % 2: i % 2 + 1], "direction": "solid"})
               for i in range(12)]
    tokens = torch.randn(12, 17, 64)
    pretrain_qformer(model, tokens, build_data(records, tokenizer, 0), 2, ("lm", "itc", "heads"), batch_size=8)
    save_qformer(tmp_path, model, tokenizer, tiny["vision"], tiny["llm"])
    loaded = TextQFormer(64, num_queries=16, pretrained=str(tmp_path)).eval()
    ln = vision_layernorm(64, str(tmp_path))
    ids, mask = torch.tensor([[5, 6, 7]] * 3), torch.ones(3, 3, dtype=torch.long)
    vmask = torch.ones(3, 17, dtype=torch.bool)
    with torch.no_grad():
        for k in (8, 16):
            want = model.qformer(k, model.ln_vision(tokens[:3]), vmask, ids, mask)
            assert torch.equal(loaded(k, ln(tokens[:3]), vmask, ids, mask), want)
    assert torch.equal(ln.weight, model.ln_vision.weight) and not torch.equal(ln.weight, torch.ones(64))  # trained


def test_bvllm_builds_from_the_folder(folder):
    from lit_bvllm.reducers import BVLLM

    out, _ = folder
    r = BVLLM(64, num_frames=4, num_tokens=8, budget=16, qformer=str(out), **SHAPE).eval()
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        queries = f.get_tensor("query_tokens")
        word = f.get_tensor("qformer.embeddings.word_embeddings.weight")
    for qf in (r.temporal_qformer, r.spatial_qformer):
        assert torch.equal(qf.query_tokens.data, queries)
        assert torch.equal(qf.qformer.embeddings.word_embeddings.weight, word)
    frames, cls = torch.randn(1, 6, 16, 64), torch.randn(1, 6, 64)
    out_ = r(frames, cls, torch.ones(1, 6, dtype=torch.bool), torch.tensor([[5, 6, 7]]),
             torch.ones(1, 3, dtype=torch.long))
    assert out_.tokens.shape[-1] == 64 and int(out_.token_mask.sum()) <= 16


def test_the_probe_runs_on_a_few_step_qformer(folder, tiny, synthetic, tmp_path, capsys):
    out, _ = folder
    path = tmp_path / "probe.json"
    result = probe_qformer([str(out)], tiny["vision"], str(synthetic), str(path))
    assert json.loads(path.read_text())["rows"] == result["rows"]
    names = set(result["rows"])
    assert {"tower [CLS]", "qformer: mean of 8 queries", "qformer: concat of 8 queries",
            "random Q-Former: mean of 8 queries"} <= names
    for row in result["rows"].values():
        assert set(COLUMNS) <= set(row) and all(0.0 <= v <= 1.0 for v in row.values())
    meta = json.loads((synthetic / "metadata.json").read_text())["videos"]
    assert result["frames"]["test"] == sum(r["duration"] for r in meta if r["split"] == "eval")
    assert "| tower [CLS] |" in capsys.readouterr().out


def test_probe_labels_carry_the_background():
    from lit_bvllm.analysis.probe import frame_labels

    labels = frame_labels({"needles": [], "background": {"colours": ["navy", "olive"], "direction": "vertical"}},
                          np.array([0.5, 1.5]))
    assert labels["background"].tolist() == [4, 4]  # BACKGROUNDS: black, gray, beige, brown, navy, olive


def test_frame_share_separates_constant_from_varying_features():
    from lit_bvllm.analysis.probe import frame_share

    g = torch.Generator().manual_seed(0)
    varying = torch.randn(500, 8, generator=g)
    assert frame_share(varying) > 0.99  # zero-mean features: all of their energy varies from frame to frame
    assert frame_share(varying * 0.01 + 5.0) < 1e-4  # a constant vector with a sliver of content


def test_pretraining_learns_and_puts_the_content_in_the_first_queries(tokenizer):
    """Steps on tokens whose background class is written into them: the loss falls, and the background head reads
    the class off the mean output of the first 8 queries alone."""
    g = torch.Generator().manual_seed(0)
    records = [dict(_record(i % 3 == 0),
                    background={"colours": [["navy", "gray", "olive"][i % 3]], "direction": "solid"})
               for i in range(48)]
    codes = torch.randn(3, 17, 16, generator=g) * 2
    tokens = codes[torch.arange(48) % 3] + 0.1 * torch.randn(48, 17, 16, generator=g)
    torch.manual_seed(0)
    model = QFormerPretraining(TextQFormer(16, 16, 32, 2, 4, 2048), 16, len(tokenizer))
    data = build_data(records, tokenizer, 0)
    log = pretrain_qformer(model, tokens, data, 40, ("heads",), batch_size=16, lr=1e-2, log_every=39)
    ids, mask, vmask = (torch.tensor([[5, 6, 7]] * 48), torch.ones(48, 3, dtype=torch.long),
                        torch.ones(48, 17, dtype=torch.bool))
    with torch.no_grad():
        pred = model.heads["background"](model.qformer(8, model.ln_vision(tokens), vmask, ids, mask).mean(1)).argmax(1)
    assert log[-1]["heads"] < 0.1 * log[0]["heads"]
    assert torch.equal(pred, data["background"])


def test_query_overlap_is_one_for_identical_queries_and_zero_for_orthogonal_ones():
    """The term that keeps the pretrained queries apart (B-VLLM's L* selection rows are the query outputs: identical
    ones select a single frame)."""
    from lit_bvllm.world.tiny_qformer import query_overlap

    same = torch.randn(3, 1, 8).expand(3, 5, 8)
    assert abs(query_overlap(same).item() - 1.0) < 1e-5
    orthogonal = torch.eye(8)[:5].expand(3, 5, 8) * 2.5
    assert query_overlap(orthogonal).item() < 1e-6
    z = torch.randn(4, 6, 16, requires_grad=True)
    query_overlap(z).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # differentiable: it trains the Q-Former

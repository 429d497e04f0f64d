"""LLaMAVID: the contract, 2 tokens per frame, and the context attention's identity collapse (LLaMA-VID §3.1)."""

import torch
from reducer_contract import check_contract, inputs, run

from lit_bvllm.reducers import LLaMAVID

SMALL = dict(num_queries=4, hidden_size=16, num_layers=2, num_heads=2, vocab_size=50)


def make(**kw) -> LLaMAVID:
    torch.manual_seed(0)
    return LLaMAVID(16, **{"budget": 12, **SMALL, **kw}).eval()


def test_contract():
    check_contract(make, text_conditioned=True)


def test_two_tokens_per_frame_in_time_order_and_the_frame_cap():
    r = make(budget=100)
    batch = inputs(2, 7, lengths=[7, 3])
    out = run(r, batch)
    assert out.info["num_tokens"].tolist() == [14, 6]
    content = out.tokens[:, 1::2]  # content tokens: the frame means
    torch.testing.assert_close(content[0], batch["frames"][0].mean(1))
    torch.testing.assert_close(content[1, :3], batch["frames"][1, :3].mean(1))
    assert run(make(budget=6), inputs(1, 50)).info["num_tokens"].tolist() == [6]  # 3 frames of 50


def test_zero_queries_give_uniform_attention_and_context_equals_content():
    r = make(budget=100)
    with torch.no_grad():
        r.query_proj.weight.zero_()
        r.query_proj.bias.zero_()
        r.context_proj.weight.copy_(torch.eye(16))
        r.context_proj.bias.zero_()
    out = run(r, inputs(1, 4))
    torch.testing.assert_close(out.tokens[0, 0::2], out.tokens[0, 1::2])  # E_t = mean(X_t)
    torch.testing.assert_close(out.info["context_attention"][0], torch.full((4, 9), 1 / 9))

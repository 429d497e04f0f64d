"""Prefill FLOPs (lit_bvllm/flops.py), against PyTorch's own count of a forward pass, and as evaluation records
them."""

import pytest
import torch
from helpers import needle_data
from torch.utils.flop_counter import FlopCounterMode
from transformers import Qwen2Config, Qwen2ForCausalLM

from lit_bvllm.flops import prefill_flops


def test_prefill_flops_match_torchs_count_of_a_forward_pass():
    """torch counts the matmuls of a real forward (attention as full L x L, the causal mask does not save work there;
    biases and norms it does not count): our causal count, with full attention put back, agrees within 1%."""
    cfg = Qwen2Config(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=300, attn_implementation="eager")
    llm = Qwen2ForCausalLM(cfg).eval()
    L = 57
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        llm(input_ids=torch.randint(0, 300, (1, L)), logits_to_keep=1)
    ours = float(prefill_flops(llm, torch.tensor([L]))[0])
    width = 64
    full = ours - 3 * 2 * width * L * (L + 1) + 3 * 4 * width * L * L  # causal -> full attention, every layer
    assert counter.get_total_flops() == pytest.approx(full, rel=0.01)
    # pruning after layer 1 to 20 tokens: layer 0 counts 57, layers 1-2 count 20
    pruned = float(prefill_flops(llm, torch.tensor([L]), torch.tensor([20]), 1)[0])
    one = (ours - 2 * 64 * 300) / 3
    assert pruned == pytest.approx(one + 2 * float(prefill_flops(llm, torch.tensor([20]))[0] - 2 * 64 * 300) / 3
                                   + 2 * 64 * 300)


def test_an_evaluation_records_the_prefill_flops_of_its_items(eval_model, tiny, synthetic):
    """Each item's record holds its prompt's prefill FLOPs (visual tokens included), the results their mean."""

    dm = needle_data(tiny, synthetic, batch_size=4, mode="likelihood", limit=8)
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        scores, info = eval_model.model.option_scores(batch)
        _, info_unshared = eval_model.model.option_scores_unshared(batch)
    assert torch.equal(info["prefill_tokens"], info_unshared["prefill_tokens"])  # both paths: the same prompt
    llm = eval_model.model.llm
    assert torch.allclose(info["prefill_flops"], prefill_flops(llm, info["prefill_tokens"]))
    assert (info["prefill_tokens"] > info["num_tokens"]).all()  # the question's tokens beside the visual ones
    records, _ = dm.evaluator.score(batch, scores, info)
    assert records and all(r["prefill_flops"] > 0 for r in records)

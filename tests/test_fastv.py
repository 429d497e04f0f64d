"""FastV inside the LLM (lit_bvllm/reducers/fastv.py): nothing pruned is the full forward; pruning by masking gives
what dropping the tokens at layer K gives (a reference that runs the decoder layers by hand); the prefill FLOPs count
the kept tokens."""

import functools

import pytest
import torch
from helpers import needle_data

from lit_bvllm.reducers import FastV, Uniform


@pytest.fixture(scope="module")
def needle_batch(tiny, synthetic):

    dm = needle_data(tiny, synthetic, batch_size=3, mode="likelihood", limit=12)
    return next(iter(dm.test_dataloader()))


def build(tiny, reducer):
    from lit_bvllm.training.lit_module import VideoLLMModule

    torch.manual_seed(0)
    m = VideoLLMModule(tiny["llm"], tiny["vision"], reducer, max_new_tokens=3)
    m.configure_model()
    return m.model.eval()


def test_fastv_keeping_every_token_is_the_full_forward(tiny, needle_batch):
    full = build(tiny, functools.partial(Uniform, num_frames=2, budget=32))
    kept = build(tiny, functools.partial(FastV, num_frames=2, budget=32, layer=1, keep=1.0))
    kept.projector.load_state_dict(full.projector.state_dict())
    with torch.no_grad():
        want, _ = full.option_scores(needle_batch)
        got, info = kept.option_scores(needle_batch)
        assert full.generate(needle_batch) == kept.generate(needle_batch)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(info["llm_kept"], info["prefill_tokens"])


def reference_last_logits(model, embeds: torch.Tensor, visual: torch.Tensor, layer: int, keep: float) -> torch.Tensor:
    """One prompt (no padding) through the LLM's layers by hand: layers < K on every token, then the kept tokens
    alone (the top round(n · keep) visual tokens by the last token's head-mean attention at layer K - 1, every text
    token), at their original positions; the last position's logits."""
    from lit_bvllm.backbones import eager_attention

    llm = model.llm
    dec = llm.get_decoder()
    L = embeds.shape[1]
    pos = torch.arange(L)[None]
    got = {}
    hook = dec.layers[layer - 1].self_attn.register_forward_hook(lambda m, a, o: got.__setitem__("w", o[1]))

    def causal(n: int) -> torch.Tensor:
        return torch.full((n, n), torch.finfo(embeds.dtype).min).triu(1)[None, None]

    with eager_attention(llm):
        h = embeds
        for i, lay in enumerate(dec.layers):
            if i == layer:  # drop the pruned visual tokens
                score = got["w"].mean(1)[0, -1].masked_fill(~visual[0], float("-inf"))
                n = int(visual.sum())
                top = score.topk(int(round(n * keep))).indices
                keep_mask = ~visual[0].clone()
                keep_mask[top] = True
                h, pos = h[:, keep_mask], pos[:, keep_mask]
            h = lay(h, attention_mask=causal(h.shape[1]), position_embeddings=dec.rotary_emb(h, pos),
                    position_ids=pos)
    hook.remove()
    return llm.lm_head(dec.norm(h))[:, -1]


def test_fastv_pruning_by_masking_equals_dropping_the_tokens(tiny, needle_batch):
    model = build(tiny, functools.partial(FastV, num_frames=2, budget=32, layer=1, keep=0.5))
    one = {k: v[:1] if isinstance(v, torch.Tensor) and k not in ("option_ids", "option_mask", "option_labels")
           else v for k, v in needle_batch.items()}
    k = int(needle_batch["num_options"][0])
    one.update(num_options=needle_batch["num_options"][:1],
               **{f: needle_batch[f][:k] for f in ("option_ids", "option_mask", "option_labels")})
    logits = {}
    real = model.llm.forward

    def spy(*a, **kw):  # the prefix call: its last position's logits
        out = real(*a, **kw)
        logits.setdefault("prefix", out.logits[:, -1])
        return out

    model.llm.forward = spy
    with torch.no_grad():
        _, info = model.option_scores(one)
        model.llm.forward = real
        visual, vmask, _ = model.visual_tokens(one)
        ids = one["option_ids"][:1]
        scored = (one["option_labels"][0] != -100).long().argmax()
        embeds, mask, _ = model.splice(ids[:, :scored], one["option_mask"][:1, :scored], visual, vmask)
        marker = torch.zeros_like(embeds[..., 0], dtype=torch.bool)
        ph = int((ids[0, :scored] == model.placeholder_id).long().argmax())
        marker[0, ph : ph + int(vmask.sum())] = True
        want = reference_last_logits(model, embeds, marker, layer=1, keep=0.5)
    torch.testing.assert_close(logits["prefix"], want, atol=1e-4, rtol=1e-4)
    n = int(vmask.sum())
    assert int(info["llm_kept"][0]) == int(mask.sum()) - n + round(n * 0.5) and int(info["llm_layer"]) == 1


def test_fastv_prefill_flops_count_the_kept_tokens(tiny, needle_batch):
    uniform = build(tiny, functools.partial(Uniform, num_frames=2, budget=32))
    fastv = build(tiny, functools.partial(FastV, num_frames=2, budget=32, layer=1, keep=0.25))
    with torch.no_grad():
        _, a = uniform.option_scores(needle_batch)
        _, b = fastv.option_scores(needle_batch)
    assert torch.equal(a["prefill_tokens"], b["prefill_tokens"]) and torch.equal(a["num_tokens"], b["num_tokens"])
    assert (b["prefill_flops"] < a["prefill_flops"]).all()
    with pytest.raises(ValueError, match="layer=2, but the LLM has 2"):
        build(tiny, functools.partial(FastV, num_frames=2, budget=32, layer=2)).option_scores(needle_batch)

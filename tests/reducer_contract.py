"""Checks every reducer must pass (the contract in lit_bvllm/reducers/base.py), at tiny dimensions.

Use from a test file::

    from reducer_contract import check_contract
    def test_contract():
        check_contract(lambda: MyReducer(in_dim=16, ...), text_conditioned=False)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lit_bvllm.reducers.base import Reducer, ReducerOutput

D, N, S, VOCAB = 16, 9, 6, 50  # width, patches per frame (3x3), question length, question vocabulary


def inputs(B: int, T: int, lengths: list[int] | None = None, seed: int = 0, text_seed: int = 1) -> dict:
    """A padded batch: frames (B,T,N,D), cls (B,T,D), frame_mask, text_ids/text_mask, cls_attn (B,T,N)."""
    g = torch.Generator().manual_seed(seed)
    lengths = lengths or [T] * B
    frame_mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    frames = torch.randn(B, T, N, D, generator=g) * frame_mask[..., None, None]
    cls = torch.randn(B, T, D, generator=g) * frame_mask[..., None]
    cls_attn = torch.softmax(torch.randn(B, T, N, generator=g), -1)
    tg = torch.Generator().manual_seed(text_seed)
    text_ids = torch.randint(1, VOCAB, (B, S), generator=tg)
    text_mask = torch.ones(B, S, dtype=torch.long)
    text_mask[0, S - 2 :] = 0
    return dict(frames=frames, cls=cls, frame_mask=frame_mask, text_ids=text_ids, text_mask=text_mask,
                cls_attn=cls_attn)


def run(reducer: Reducer, batch: dict) -> ReducerOutput:
    out = reducer(**batch)
    B = batch["frames"].shape[0]
    assert isinstance(out, ReducerOutput)
    assert out.tokens.ndim == 3 and out.tokens.shape[0] == B and out.tokens.shape[2] == reducer.out_dim
    assert out.token_mask.shape == out.tokens.shape[:2] and out.token_mask.dtype == torch.bool
    counts = out.token_mask.sum(1)
    assert (counts <= reducer.budget).all(), (counts, reducer.budget)
    # valid tokens first, padding zeroed
    m = out.token_mask
    assert (m.int().diff(dim=1) <= 0).all(), "valid tokens must form a prefix of each row"
    assert (out.tokens[~m] == 0).all()
    assert torch.isfinite(out.tokens).all()
    return out


def check_contract(make: Callable[[], Reducer], text_conditioned: bool, ts: tuple[int, ...] = (1, 3, 16, 200)) -> None:
    """Budget for every T, padded batches, gradients to every parameter, eval determinism, text sensitivity."""
    torch.manual_seed(0)
    reducer = make()
    reducer.eval()
    for T in ts:
        run(reducer, inputs(2, T))
    padded = inputs(3, 16, lengths=[16, 5, 1])
    out = run(reducer, padded)
    # a padded sample gives the same tokens as the same sample alone
    alone = {k: v[1:2, :5] if k in ("frames", "cls", "frame_mask", "cls_attn") else v[1:2] for k, v in padded.items()}
    solo = run(reducer, alone)
    n = int(solo.token_mask.sum())
    assert int(out.token_mask[1].sum()) == n
    torch.testing.assert_close(out.tokens[1, :n], solo.tokens[0, :n], atol=1e-4, rtol=1e-4)

    # evaluation is deterministic, whatever the global RNG does in between
    a = run(reducer, inputs(2, 16))
    torch.rand(10)
    b = run(reducer, inputs(2, 16))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.token_mask, b.token_mask)

    # frames_to_encode is a subset of real frames, and forward on that subset alone gives the same output
    batch = inputs(2, 16, lengths=[16, 11])
    keep = reducer.frames_to_encode(batch["frame_mask"])
    assert keep.shape == batch["frame_mask"].shape and not (keep & ~batch["frame_mask"]).any()
    if not torch.equal(keep, batch["frame_mask"]):
        full = run(reducer, batch)
        t = int(keep.sum(1).max())
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :t]
        sub = dict(batch)
        for k in ("frames", "cls", "cls_attn"):
            sub[k] = torch.stack([batch[k][i, order[i]] for i in range(2)])
        sub["frame_mask"] = torch.gather(keep, 1, order)
        part = run(reducer, sub)
        torch.testing.assert_close(full.tokens, part.tokens, atol=1e-5, rtol=1e-5)

    # gradients reach every learnable parameter (training mode)
    reducer.train()
    params = [p for p in reducer.parameters() if p.requires_grad]
    if params:
        batch = inputs(2, 16, lengths=[16, 7])
        batch["frames"].requires_grad_(True)
        out = run(reducer, batch)
        (out.tokens.pow(2).sum() + out.tokens.sum()).backward()
        missing = [name for name, p in reducer.named_parameters()
                   if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
        assert not missing, f"no gradient reaches: {missing}"
    reducer.eval()

    if text_conditioned:
        x = run(reducer, inputs(2, 16, text_seed=1))
        y = run(reducer, inputs(2, 16, text_seed=2))
        assert not torch.allclose(x.tokens, y.tokens), "a different question must change the output"

"""BVLLM: the contract, and each equation of the paper (§3) on hand-made inputs."""

import json

import pytest
import torch
import torch.nn.functional as F
from reducer_contract import N, check_contract, inputs, run

from lit_bvllm.reducers.bvllm import BVLLM
from lit_bvllm.reducers.sampling import keyed_gumbel_noise

SMALL = dict(num_frames=4, num_tokens=4, budget=10, num_queries=6, hidden_size=16, num_layers=2, num_heads=2,
             vocab_size=50)


def make(**kw) -> BVLLM:
    torch.manual_seed(0)
    return BVLLM(16, **{**SMALL, **kw}).eval()


@pytest.mark.parametrize(
    "switches",
    [{}, {"frame_selection": False}, {"temporal_merge": False}, {"spatial_sampling": False}, {"spatial_merge": False},
     {"selection": "soft"}, {"selection": "soft", "eval_noise": True}, {"eval_noise": True}],
)
def test_contract(switches):
    check_contract(lambda: make(**switches), text_conditioned=switches.get("spatial_sampling", True))


def planted(reducer: BVLLM, frames_per_query: list[int], T: int):
    """Make ``select`` return one-hot rows on the given frames (Eq. 1 with a planted score matrix)."""
    s = F.one_hot(torch.tensor([frames_per_query]), T).float()
    reducer.select = lambda *a, **k: s
    return s


def test_planted_scores_select_the_planted_frames_in_time_order():
    r = make(spatial_sampling=False, num_tokens=N, budget=10_000, num_frames=4)  # pooling N -> N is the identity
    batch = inputs(1, 10)
    planted(r, [7, 2, 9, 4], 10)
    out = run(r, batch)
    expect = batch["frames"][0, [2, 4, 7, 9]].reshape(-1, 16)  # V* restored to temporal order
    torch.testing.assert_close(out.tokens[0], expect)
    assert out.info["frame_indices"][0].tolist() == [2, 4, 7, 9]


def test_logits_select_frames_through_the_gumbel_argmax():
    """Eq. 1 end to end: queries aligned with chosen [CLS] tokens pick those frames (evaluation: argmax)."""
    r = make(spatial_sampling=False, num_tokens=N, budget=10_000, num_frames=2)
    batch = inputs(1, 6)
    cls = torch.zeros(1, 6, 16)
    cls[0, 1, 0] = cls[0, 4, 1] = 10.0
    batch["cls"] = cls
    with torch.no_grad():
        r.temporal_proj.weight.zero_()
        r.temporal_proj.bias.copy_(torch.zeros(16))
        r.temporal_proj.bias[[0, 1]] = 1.0  # every query scores frame 1 and frame 4 equally high ...
    out = run(r, batch)
    assert set(out.info["frame_indices"][0][out.info["frame_indices"][0] >= 0].tolist()) <= {1, 4}


def test_duplicates_merge_and_chains_are_transitive():
    r = make()
    # soft rows: 0 ~ 1 and 1 ~ 2 (cos >= 0.75) but 0 !~ 2; row 3 unrelated
    c, d = (torch.cos(torch.deg2rad(torch.tensor([0.0, 40.0, 80.0]))),
            torch.sin(torch.deg2rad(torch.tensor([0.0, 40.0, 80.0]))))
    s = torch.zeros(1, 4, 6)
    s[0, :3, 0], s[0, :3, 1], s[0, 3, 5] = c, d, 1.0  # rows at 0, 40 and 80 degrees, and an unrelated one
    u = F.normalize(s, dim=-1)
    sim = u @ u.transpose(1, 2)
    assert sim[0, 0, 1] >= 0.75 and sim[0, 1, 2] >= 0.75 and sim[0, 0, 2] < 0.75
    s_sorted, groups, keep = r.order_and_group(s)
    # one group {0,1,2} (the released code drops row 2), and row 3
    assert keep[0].tolist() == [True, False, False, True]
    assert groups[0, 0].tolist() == [1.0, 1.0, 1.0, 0.0] and groups[0, 3].tolist() == [0.0, 0.0, 0.0, 1.0]


def angles(degrees: list[float], T: int = 6) -> torch.Tensor:
    """Rows (1, len, T) at the given angles in the plane of frames 0 and 1 (non-negative, as softmax rows are)."""
    rad = torch.deg2rad(torch.tensor(degrees))
    s = torch.zeros(1, len(degrees), T)
    s[0, :, 0], s[0, :, 1] = torch.cos(rad), torch.sin(rad)
    return s


@pytest.mark.parametrize("degrees, gamma, groups", [
    ([0.0, 45.0, 90.0], 0.7, [[0, 1], [2]]),  # cos(a, b) = cos(b, c) = 0.707 >= γ, cos(a, c) = 0
    ([0.0, 18.0, 36.0, 54.0, 72.0, 90.0], 0.95, [[0, 1], [2, 3], [4, 5]]),  # 0° to 90° in steps of cos 0.951
])
def test_soft_grouping_follows_eq_2_to_5_not_connected_components(degrees, gamma, groups):
    """Eq. 2-5: the first remaining row α takes the remaining rows within γ of it, then the next remaining row goes
    on. Connected components (hard mode's rule) would chain every row into one group, merging orthogonal rows."""
    r = make(selection="soft", gamma=gamma)
    s = angles(degrees)
    _, g, keep = r.order_and_group(s)
    found = [torch.nonzero(g[0, i]).flatten().tolist() for i in range(len(degrees)) if keep[0, i]]
    assert found == groups
    r.selection = "hard"
    _, g, keep = r.order_and_group(s)
    assert keep[0].tolist() == [True] + [False] * (len(degrees) - 1)  # hard mode: one chain, as before
    # the same groups reach the output: group sizes and tokens of the group means
    r = make(selection="soft", gamma=gamma, spatial_sampling=False, num_tokens=N, budget=10_000,
             num_frames=len(degrees))
    r.select = lambda *a, **k: s
    batch = inputs(1, 6)
    out = run(r, batch)
    assert out.info["group_sizes"][0][out.info["group_sizes"][0] > 0].tolist() == [len(m) for m in groups]
    v = torch.einsum("lt,tnd->lnd", s[0], batch["frames"][0])  # V* = S V
    expect = torch.cat([v[m].mean(0) for m in groups])
    torch.testing.assert_close(out.tokens[0], expect)


def near_duplicate_scores(T: int = 8) -> torch.Tensor:
    """Planted Eq. 1 scores of a video whose frames 1 and 2 are near-duplicates: queries 0 and 1 each prefer one of
    them by a small margin, queries 2 and 3 look at frames 5 and 7."""
    logits = torch.zeros(1, 4, T)
    logits[0, 0, [1, 2]] = torch.tensor([5.0, 4.6])
    logits[0, 1, [1, 2]] = torch.tensor([4.6, 5.0])
    logits[0, 2, 5] = logits[0, 3, 7] = 5.0
    return logits


def test_soft_selection_makes_gamma_act_at_evaluation():
    """Soft rows over near-duplicate frames have a cosine between 0.75 and 0.95: γ decides whether they merge.
    Hard rows (argmax) pick frames 1 and 2 as two different frames, whatever γ."""
    batch = inputs(1, 8)
    outs = {}
    for selection in ("hard", "soft"):
        for gamma in (0.75, 0.95):
            r = make(selection=selection, gamma=gamma, tau=1.0, budget=10_000)
            r.scores = lambda *a, **k: near_duplicate_scores()
            outs[selection, gamma] = run(r, batch)
    lo, hi = outs["soft", 0.75], outs["soft", 0.95]
    assert lo.info["group_sizes"][0].tolist() == [2, 0, 1, 1] and hi.info["group_sizes"][0].tolist() == [1, 1, 1, 1]
    assert lo.tokens.shape != hi.tokens.shape or not torch.allclose(lo.tokens, hi.tokens)
    assert lo.info["frame_indices"][0].tolist() == [1, -1, 5, 7]  # the kept rows' argmax frames
    assert hi.info["frame_indices"][0].tolist() == [1, 2, 5, 7]
    assert torch.equal(outs["hard", 0.75].tokens, outs["hard", 0.95].tokens)


def test_tau_sharpens_soft_rows_at_evaluation():
    """Evaluation rows are the noise-free softmax(scores / τ): lower τ is closer to one-hot, and changes the tokens."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 12, generator=g)
    batch = inputs(2, 12, lengths=[12, 9])
    peak, tokens = [], []
    for tau in (2.0, 0.5, 0.1, 0.001):
        r = make(selection="soft", tau=tau, gamma=1.0, budget=10_000)
        r.scores = lambda *a, **k: logits
        out = run(r, batch)
        s = out.info["selection"]
        expect = torch.softmax(logits.masked_fill(~batch["frame_mask"][:, None], float("-inf")) / tau, -1)
        order = torch.sort(expect.argmax(-1), dim=1, stable=True).indices  # rows come back in temporal order
        torch.testing.assert_close(s, torch.gather(expect, 1, order[..., None].expand_as(expect)))
        assert (s[1, :, 9:] == 0).all()  # padded frames get no weight
        peak.append(s.amax(-1).mean().item())
        tokens.append(out.tokens)
    assert peak == sorted(peak) and peak[0] < 0.5 and peak[-1] > 0.999  # τ -> 0: one-hot rows
    assert not torch.allclose(tokens[0], tokens[2])


def test_seeded_evaluation_noise_repeats_and_depends_on_the_seed():
    """eval_noise: the released code's Gumbel noise at evaluation, from a seed: two passes agree (whatever the
    global RNG does), another seed gives other rows, and noise-free rows differ from both."""
    batch = inputs(2, 16, lengths=[16, 11])
    r = make(selection="soft", eval_noise=True, tau=0.5, budget=10_000)
    a = run(r, batch)
    torch.rand(100)
    b = run(r, batch)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.info["selection"], b.info["selection"])
    r.noise_seed = 1
    c = run(r, batch)
    assert not torch.allclose(a.info["selection"], c.info["selection"])
    r.eval_noise = False
    assert not torch.allclose(a.info["selection"], run(r, batch).info["selection"])
    # the noise is standard Gumbel (mean = Euler's constant, variance = π²/6), and a fixed function of its keys
    z = keyed_gumbel_noise(0, torch.arange(200)[:, None, None], torch.arange(32)[None, :, None],
                           torch.arange(64)[None, None])
    assert abs(z.mean().item() - 0.5772) < 0.01 and abs(z.var().item() - 1.6449) < 0.03
    assert torch.equal(z[3:5, :8, :10], keyed_gumbel_noise(0, torch.arange(3, 5)[:, None, None],
                                                          torch.arange(8)[None, :, None],
                                                          torch.arange(10)[None, None]))


def test_soft_training_samples_noisy_soft_rows():
    """Training in soft mode: Gumbel-softmax rows with noise (the released code), soft and differentiable."""
    r = make(selection="soft", tau=1.0).train()
    batch = inputs(1, 10)
    r.generator = torch.Generator().manual_seed(3)
    s = r.select(batch["cls"], batch["frame_mask"], batch["text_ids"], batch["text_mask"])
    r.generator = torch.Generator().manual_seed(4)
    s2 = r.select(batch["cls"], batch["frame_mask"], batch["text_ids"], batch["text_mask"])
    assert s.requires_grad and (s.amax(-1) < 1).all()
    torch.testing.assert_close(s.sum(-1), torch.ones(1, 4))
    assert not torch.allclose(s, s2)  # fresh noise


@pytest.mark.parametrize("budget", [1, 3, 7, 10, 13, 40])
def test_soft_selection_keeps_the_budget(budget):
    r = make(selection="soft", budget=budget, gamma=0.95, tau=1.0)
    r.scores = lambda *a, **k: near_duplicate_scores(8).expand(2, -1, -1)
    out = run(r, inputs(2, 8))  # run() checks <= θ
    assert out.token_mask.sum(1).tolist() == [min(budget, 16)] * 2
    r = make(selection="soft", budget=budget, eval_noise=True)
    run(r, inputs(2, 200))


def test_hard_default_is_unchanged():
    """Golden numbers of the hard mode, recorded from the implementation before ``selection`` existed (ec7d2a5)."""
    r = make()
    out = run(r, inputs(2, 12))
    assert out.info["frame_indices"].tolist() == [[1, 6, 9, 11], [1, 2, 8, -1]]
    assert (out.info["group_sizes"].tolist() == [[1, 1, 1, 1], [1, 1, 2, 0]]
            and out.info["num_tokens"].tolist() == [10, 10])
    assert out.tokens.double().abs().sum().item() == pytest.approx(243.70198257573065, rel=1e-6)
    torch.testing.assert_close(out.tokens[0, 0, :4],
                               torch.tensor([0.1205609143, -0.5238227248, -0.5685214996, -0.2664922476]))
    r.train()
    torch.manual_seed(5)
    out = r(**inputs(2, 12, lengths=[12, 7]))  # straight-through rows, noise from the global RNG
    assert out.info["frame_indices"].tolist() == [[0, 1, 6, 9], [0, -1, -1, 5]]
    assert (out.info["group_sizes"].tolist() == [[1, 1, 1, 1], [3, 0, 0, 1]]
            and out.info["num_tokens"].tolist() == [10, 8])
    assert out.tokens.detach().double().abs().sum().item() == pytest.approx(212.10578584956238, rel=1e-6)


def test_duplicate_selections_are_averaged_once():
    """Eq. 4: a group's tokens are the mean of its members; with identical rows that is the frame itself, once."""
    r = make(spatial_sampling=False, num_tokens=N, budget=10_000, num_frames=4)
    batch = inputs(1, 8)
    planted(r, [5, 1, 5, 5], 8)
    out = run(r, batch)
    assert out.info["group_sizes"][0].tolist() == [1, 3, 0, 0]
    torch.testing.assert_close(out.tokens[0], batch["frames"][0, [1, 5]].reshape(-1, 16))
    r.temporal_merge = False  # the switch: duplicates stay
    out = run(r, batch)
    assert int(out.token_mask.sum()) == 4 * N


@pytest.mark.parametrize("budget", [1, 3, 5, 7, 10, 12, 13, 40])
def test_spatial_merging_lands_exactly_on_the_budget(budget):
    r = make(budget=budget)
    planted(r, [0, 2, 4, 6], 8)
    out = run(r, inputs(1, 8))
    assert int(out.token_mask.sum()) == min(budget, 4 * 4)
    if 4 <= budget < 16:  # per-frame targets sum to θ and differ by at most one
        per = out.info["tokens_per_frame"][0][out.info["tokens_per_frame"][0] > 0]
        assert per.sum() == budget and per.max() - per.min() <= 1


def test_spatial_merge_switch_drops_whole_frames_instead():
    r = make(budget=10, spatial_merge=False)
    planted(r, [0, 2, 4, 6], 8)
    out = run(r, inputs(1, 8))
    assert int(out.token_mask.sum()) == 8  # two whole frames of R = 4 fit under θ = 10


def copy_into(dst: BVLLM, src: BVLLM) -> BVLLM:
    dst.load_state_dict(src.state_dict(), strict=False)
    return dst


def test_each_switch_changes_only_its_own_component():
    full = make(budget=10_000)
    batch = inputs(2, 12)
    ref = run(full, batch)
    # temporal merge off, on a selection with no duplicates: identical output
    planted(full, [1, 3, 5, 7], 12)
    base = run(full, batch)
    off = copy_into(make(budget=10_000, temporal_merge=False), full)
    planted(off, [1, 3, 5, 7], 12)
    torch.testing.assert_close(run(off, batch).tokens, base.tokens)
    # spatial merge off under a budget that needs no merging: identical output
    off = copy_into(make(budget=10_000, spatial_merge=False), full)
    torch.testing.assert_close(run(off, batch).tokens, ref.tokens)
    # spatial sampling off: same frames chosen, tokens become pooled patches
    off = copy_into(make(budget=10_000, spatial_sampling=False), full)
    pooled = run(off, batch)
    assert torch.equal(pooled.info["frame_indices"], ref.info["frame_indices"])
    assert pooled.tokens.shape[-1] == 16 and torch.equal(pooled.info["num_tokens"], ref.info["num_tokens"])
    # frame selection off: uniform frames, then the very same spatial stage
    off = copy_into(make(budget=10_000, frame_selection=False), full)
    uni = run(off, batch)
    assert uni.info["frame_indices"][0].tolist() == [1, 4, 7, 10]
    planted(full, [1, 4, 7, 10], 12)
    torch.testing.assert_close(uni.tokens[0], run(full, batch).tokens[0])


def test_hyperparameters_change_on_a_trained_model():
    r = make(budget=10_000)
    r.num_frames, r.num_tokens = 2, 3
    out = run(r, inputs(2, 12))
    assert (out.info["num_frames_kept"] <= 2).all() and int(out.token_mask.sum(1).max()) <= 6
    r.budget, r.tau, r.gamma = 4, 0.5, 0.9
    assert (run(r, inputs(2, 12)).token_mask.sum(1) <= 4).all()
    r.num_frames = 7  # more than the 6 trained queries
    with pytest.raises(ValueError, match="6 were trained"):
        run(r, inputs(2, 12))


def test_more_queries_than_frames_and_padded_frames():
    r = make(num_frames=6, budget=10_000)
    out = run(r, inputs(3, 5, lengths=[2, 5, 1]))
    idx = out.info["frame_indices"]
    assert (out.info["num_frames_kept"] <= torch.tensor([2, 5, 1])).all()
    assert idx[0].max() < 2 and idx[2].max() < 1  # padded frames never selected


def test_training_rows_copy_frames_exactly():
    r = make(spatial_sampling=False, num_tokens=N, budget=10_000).train()
    batch = inputs(1, 10)
    out = r(**batch)
    kept = out.info["frame_indices"][0]
    kept = kept[kept >= 0]
    torch.testing.assert_close(out.tokens[0, : len(kept) * N].detach(), batch["frames"][0, kept].reshape(-1, 16))


def test_qformer_from_a_local_instructblip_checkpoint(tmp_path):
    from safetensors.torch import save_file

    src = make()
    qf = src.spatial_qformer
    state = {f"qformer.{k}": v.contiguous() for k, v in qf.qformer.state_dict().items()}
    state["query_tokens"] = qf.query_tokens.detach().clone()
    state["language_model.lm_head.weight"] = torch.zeros(2, 2)  # the 7B part is never read
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "instructblip",
                                                      "qformer_config": qf.qformer.config.to_dict()}))
    loaded = BVLLM(16, **{**SMALL, "qformer": str(tmp_path)}).eval()
    for part in (loaded.spatial_qformer, loaded.temporal_qformer):
        assert torch.equal(part.query_tokens, qf.query_tokens)
        for (k, a), (_, b) in zip(part.qformer.state_dict().items(), qf.qformer.state_dict().items()):
            assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="cross-attends to width 16"):
        BVLLM(32, **{**SMALL, "qformer": str(tmp_path)})


def test_spatial_attention_maps_for_visualisation():
    r = make(budget=10_000)
    batch = inputs(2, 8, lengths=[8, 3])
    plain = run(r, batch)
    r.record_attention = True
    out = run(r, batch)
    torch.testing.assert_close(out.tokens, plain.tokens, atol=1e-5, rtol=1e-5)  # eager vs fused: same tokens
    maps = out.info["spatial_attention"]
    assert maps.shape == (2, 4, 4, N)
    kept = out.info["frame_indices"] >= 0
    torch.testing.assert_close(maps[kept].sum(-1), torch.ones(int(kept.sum()), 4))  # rows are distributions
    assert (maps[~kept] == 0).all()


@pytest.mark.parametrize("bad, message", [
    ({"budget": 0}, "budget=0"),
    ({"budget": -4}, "budget=-4"),
    ({"num_frames": 8, "num_queries": 6}, "num_frames=8 .* exceeds num_queries=6"),
    ({"num_tokens": 7, "num_queries": 6}, "num_tokens=7 .* exceeds num_queries=6"),
    ({"spatial_merge": False, "num_tokens": 6, "budget": 5}, "spatial_merge=false"),
    ({"tau": 0.0}, "tau=0.0"),
    ({"selection": "gumbel"}, "selection='gumbel'"),
])
def test_impossible_settings_fail_when_set(bad, message):
    """They used to pass construction and fail at the first forward (too few queries) or hand the LLM zero tokens
    (R > θ without spatial merging)."""
    with pytest.raises(ValueError, match=message):
        make(**bad)

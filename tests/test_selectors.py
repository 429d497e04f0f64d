"""Training-free frame selectors (lit_bvllm/selectors.py): golden values from the papers' descriptions, the
reference rule of BOLT's release re-derived in numpy, determinism, and composition with a token reducer inside
VideoLLM (the tower encodes only the selected frames)."""

import functools

import numpy as np
import pytest
import torch
from helpers import needle_data

from lit_bvllm.selectors import aks_frames, bolt_frames, qframe_frames

RULES = {"bolt": bolt_frames, "aks": aks_frames, "qframe": qframe_frames}


def frames_of(chosen: torch.Tensor) -> list[list[int]]:
    return [row.nonzero().flatten().tolist() for row in chosen]


def test_bolt_keeps_the_frames_at_evenly_spaced_quantiles_of_the_score_density():
    # s = 0..9: min-max i/9, power 1, CDF_i = i(i+1)/90; quantiles 1/3, 1/2, 2/3 are first reached at frames 5, 7, 8
    s = torch.arange(10.0)[None]
    mask = torch.ones(1, 10, dtype=torch.bool)
    assert frames_of(bolt_frames(s, mask, 3, power=1.0)) == [[5, 7, 8]]
    # power sharpens: with power 3 every quantile lands on the three best frames' slope (CDF_i ∝ Σ j³)
    assert frames_of(bolt_frames(s, mask, 3, power=3.0)) == [[7, 8, 9]]
    # a peak: quantiles pile on it, and a frame two quantiles reach is kept once (at most k frames)
    peak = torch.zeros(1, 100)
    peak[0, 40:45] = torch.tensor([0.9, 1.0, 1.0, 1.0, 1.0])
    assert frames_of(bolt_frames(peak, torch.ones(1, 100, dtype=torch.bool), 16)) == [[40, 41, 42, 43, 44]]


def test_bolt_matches_the_released_rule_on_random_scores():
    """BOLT's inverse_transform_sampling (select_frames.py), written again in numpy from its description: min-max,
    power, CDF, ``searchsorted(cdf, linspace(1/n, 1 - 1/n, n))``; our frames are its indices without repeats."""
    rng = np.random.default_rng(0)
    for T, k, power in [(50, 8, 3.0), (300, 16, 2.5), (1000, 32, 1.0)]:
        s = rng.normal(size=T)
        d = ((s - s.min()) / (s.max() - s.min())) ** power
        cdf = np.cumsum(d / d.sum())
        want = sorted(set(np.searchsorted(cdf, np.linspace(1 / k, 1 - 1 / k, k)).tolist()))
        got = bolt_frames(torch.tensor(s)[None].float(), torch.ones(1, T, dtype=torch.bool), k, power)
        assert frames_of(got) == [want], (T, k)


def test_aks_judges_a_bin_by_its_top_frames_then_splits_for_coverage():
    s = torch.tensor([[0.0, 0, 0, 1, 0, 0, 0, 0]])
    mask = torch.ones(1, 8, dtype=torch.bool)
    # whole video: top-2 mean 0.5 - mean 0.125 = 0.375 > 0.3: a leaf, its top 2 (frame 3, then the first of the ties)
    assert frames_of(aks_frames(s, mask, 2, threshold=0.3, depth=2)) == [[0, 3]]
    # 0.375 < 0.5: split at frame 4, one frame each half: the peak, and the first frame of the flat half
    assert frames_of(aks_frames(s, mask, 2, threshold=0.5, depth=2)) == [[3, 4]]
    # flat scores never stand out: bins down to `depth` share the budget equally (coverage)
    flat = torch.zeros(1, 8)
    assert frames_of(aks_frames(flat, mask, 4, threshold=0.8, depth=2)) == [[0, 2, 4, 6]]
    # an odd budget: the first half takes the larger share
    assert frames_of(aks_frames(flat, mask, 3, threshold=0.8, depth=1)) == [[0, 1, 4]]


def test_qframe_is_gumbel_max_top_k_seeded_and_batch_independent():
    torch.manual_seed(0)
    s = torch.randn(3, 40) * 5
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[1, 25:] = False
    a = qframe_frames(s, mask, 6, tau=0.8, seed=7)
    torch.rand(100)  # the global RNG does not matter
    assert torch.equal(a, qframe_frames(s, mask, 6, tau=0.8, seed=7))
    assert not torch.equal(a, qframe_frames(s, mask, 6, tau=0.8, seed=8))
    # a padded row selects as it does alone
    assert torch.equal(a[1:2, :25], qframe_frames(s[1:2, :25], mask[1:2, :25], 6, tau=0.8, seed=7))
    # a low temperature is the top-k of the logits; a high one is (seeded) uniform
    cold = qframe_frames(s, mask, 6, tau=1e-4, seed=7)
    top = s.masked_fill(~mask, -1e9).topk(6, 1).indices
    assert torch.equal(cold, torch.zeros_like(mask).scatter_(1, top, True))
    hits = sum(qframe_frames(torch.zeros(1, 10).index_fill(1, torch.tensor([3]), 1.0),
                             torch.ones(1, 10, dtype=torch.bool), 1, tau=0.5, seed=i)[0, 3].item() for i in range(400))
    p = np.exp(2) / (np.exp(2) + 9)  # softmax(logits / 0.5) of the raised frame
    assert abs(hits / 400 - p) < 0.08, (hits / 400, p)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_selector_keeps_at_most_k_real_frames_on_16_to_256_frames(rule):
    g = torch.Generator().manual_seed(1)
    for T in (16, 64, 256):
        s = torch.randn(3, T, generator=g)
        mask = torch.arange(T)[None] < torch.tensor([[T], [T // 2], [5]]).T.reshape(3, 1)
        for k in (1, 6, 16):
            chosen = RULES[rule](s, mask, k)
            assert chosen.dtype == torch.bool and not (chosen & ~mask).any()
            assert (chosen.sum(1) <= k).all() and (chosen.sum(1) >= 1).all()
            if rule != "bolt":  # BOLT keeps a frame two quantiles reach once; the others fill k
                assert chosen.sum(1).tolist() == mask.sum(1).clamp_max(k).tolist()


def test_a_selector_composes_with_a_reducer_and_the_tower_encodes_only_its_frames(tiny, synthetic):
    """BOLT before a Uniform reducer: the tower encodes only the selected frames, the tokens equal the reducer's on a
    batch whose frames are those, the kept frames are among them, and two evaluations agree; a question on a
    needle changes the frames."""
    from lit_bvllm.reducers import Uniform
    from lit_bvllm.selectors import BOLT
    from lit_bvllm.training.lit_module import VideoLLMModule

    m = VideoLLMModule(tiny["llm"], tiny["vision"], functools.partial(Uniform, num_frames=8, budget=8 * 16),
                       frame_selector=functools.partial(BOLT, num_frames=3))
    m.configure_model()
    model = m.model.eval()
    assert model.selector.stage == "before_tower" and m.hparams["frame_selector"]["init_args"] == {"num_frames": 3}
    dm = needle_data(tiny, synthetic, batch_size=4, mode="likelihood", limit=8, question_tokenizer=tiny["vision"])
    batch = next(iter(dm.test_dataloader()))
    held = []
    real = model.vision.forward
    model.vision.forward = lambda *a, **k: held.append(real(*a, **k)) or held[-1]
    with torch.no_grad():
        tokens, mask, info = model.visual_tokens(batch)
        again, _, _ = model.visual_tokens(batch)
        chosen, _ = model.selector(batch["frames"], batch["frame_mask"], batch["question_ids"], batch["question_mask"])
        model.selector, selector = None, model.selector
        want, want_mask, _ = model.visual_tokens({**batch, "frame_mask": chosen})
        model.selector = selector
    model.vision.forward = real
    assert (batch["frame_mask"].sum(1) > 3).all()
    assert info["frames_encoded"].tolist() == chosen.sum(1).tolist() == info["selector_frames"].tolist()
    assert (chosen.sum(1) <= 3).all() and int(held[0]["frame_mask"].sum()) == int(chosen.sum())
    assert torch.equal(tokens, again) and torch.equal(mask, want_mask)
    torch.testing.assert_close(tokens, want)
    kept = info["kept_frames"]
    assert all(chosen[b, f] for b in range(kept.shape[0]) for f in kept[b].tolist() if f >= 0)


def test_a_selector_takes_the_scorers_tokenizer_and_refuses_a_text_conditioned_reducer():
    """--model.frame_selector points --data.question_tokenizer at its scorer (its own folder, else the tower's), and
    is refused beside a reducer that reads the question in its own tokenizer (B-VLLM)."""
    from jsonargparse import Namespace

    from lit_bvllm.cli.commands import link_selector_tokenizer

    def cfg(reducer: str, selector_args: dict, tokenizer=None) -> Namespace:
        return Namespace(model=Namespace(vision_tower="towers/clip", reducer=Namespace(
            class_path=f"lit_bvllm.reducers.{reducer}", init_args=Namespace()), frame_selector=Namespace(
            class_path="lit_bvllm.selectors.AKS", init_args=Namespace(**selector_args))),
            data=Namespace(init_args=Namespace(question_tokenizer=tokenizer)))

    for args, tokenizer, want in [({}, None, "towers/clip"), ({"scorer": "towers/siglip"}, None, "towers/siglip"),
                                  ({}, "mine", "mine")]:
        c = cfg("Uniform", args, tokenizer)
        link_selector_tokenizer(c)
        assert c.data.init_args.question_tokenizer == want
    with pytest.raises(ValueError, match=r"--model.frame_selector \(AKS\).*--model.reducer \(BVLLM\)"):
        link_selector_tokenizer(cfg("BVLLM", {}))


def test_an_export_keeps_its_frame_selector(tiny, tmp_path):
    """A model exported with a selector reloads with it, and its model.yaml names it (a selector has no weights:
    its class and arguments are all there is to keep)."""
    import yaml

    from lit_bvllm.export import export, load_exported
    from lit_bvllm.model import VideoLLM
    from lit_bvllm.reducers import Uniform
    from lit_bvllm.selectors import QFrame

    model = VideoLLM(tiny["llm"], tiny["vision"], functools.partial(Uniform, num_frames=4, budget=64),
                     frame_selector=functools.partial(QFrame, num_frames=4, tau=0.5, seed=3))
    export(model, tmp_path / "export")
    again = load_exported(tmp_path / "export")
    assert isinstance(again.selector, QFrame) and (again.selector.num_frames, again.selector.tau) == (4, 0.5)
    spec = yaml.safe_load((tmp_path / "export" / "model.yaml").read_text())["model"]["frame_selector"]
    assert spec == {"class_path": "lit_bvllm.selectors.QFrame", "init_args": {"num_frames": 4, "tau": 0.5, "seed": 3}}

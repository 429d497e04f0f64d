"""B-VLLM's paper configuration: InstructBLIP's EVA ViT-g as the tower and its Q-Former as the start of the reducers'.

A tiny ``InstructBlipForConditionalGeneration`` is saved with ``save_pretrained`` (the layout a real checkpoint has)
and read back through the suite's loaders: the tower's features, and the Q-Formers' outputs, equal InstructBLIP's
own on the same frames and question. A Q-Former-only folder (the tiny world's) serves the reducers and is refused as
a tower; the real shapes build on the meta device from a config alone; the shipped backbone configs compose with
the reducer configs through the real CLI parser.
"""

import functools
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from lit_bvllm.reducers import BVLLM, LLaMAVID
from lit_bvllm.vision import VisionEncoder

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
WORDS = ["what", "is", "the", "colour", "of", "shape", "a", "red", "blue", "star", "ring", "in", "video", "frame",
         "describe", "this", "how", "many", "are", "there", "?", "."]
QFORMER_KEYS = ("qformer.", "query_tokens", "vision_model.post_layernorm.")  # what a Q-Former-only folder holds


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lit_bvllm"])  # the CLI reads its arguments from the test, not pytest's


def _bert_tokenizer(folder: Path, words: list[str]):
    from transformers import BertTokenizer

    tok = BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])})
    tok.save_pretrained(folder)
    return tok


@pytest.fixture(scope="module")
def instructblip(tmp_path_factory):
    """A tiny InstructBLIP as ``save_pretrained`` writes it (48-wide 2-layer ViT at 32 px / 8 px patches, 32-wide
    2-layer Q-Former with 6 queries, a 1-layer Qwen2), its BlipImageProcessor and its ``qformer_tokenizer/``; every
    tensor random (HF's init leaves the ViT near zero and the LayerNorms at 1/0, which would hide a wrong load)."""
    from transformers import BlipImageProcessor, InstructBlipConfig, InstructBlipForConditionalGeneration

    root = tmp_path_factory.mktemp("instructblip")
    tok = _bert_tokenizer(root / "qformer_tokenizer", WORDS)
    config = InstructBlipConfig(
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        qformer_config=dict(vocab_size=len(tok) + 1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, encoder_hidden_size=48, max_position_embeddings=64),
        text_config=dict(model_type="qwen2", vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1),
        num_query_tokens=6,
    )
    torch.manual_seed(0)
    model = InstructBlipForConditionalGeneration(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.1)
    model.save_pretrained(root)
    BlipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root)
    return root


def _qformer_only(full: Path, out: Path) -> Path:
    """The Q-Former-only folder of TextQFormer's docstring: config.json, a model.safetensors with only qformer.*,
    query_tokens and vision_model.post_layernorm.*, and qformer_tokenizer/."""
    out.mkdir()
    shutil.copy(full / "config.json", out / "config.json")
    shutil.copytree(full / "qformer_tokenizer", out / "qformer_tokenizer")
    with safe_open(str(full / "model.safetensors"), "pt") as f:
        save_file({k: f.get_tensor(k) for k in f.keys() if k.startswith(QFORMER_KEYS)}, str(out / "model.safetensors"),
                  metadata={"format": "pt"})
    return out


def _saved(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}


def _reference(folder: Path):
    from transformers import InstructBlipForConditionalGeneration

    return InstructBlipForConditionalGeneration.from_pretrained(folder, local_files_only=True).eval()


def _frames_and_pixels(folder: Path, T: int = 3):
    """uint8 frames ``(1, T, 3, 32, 32)`` and the tower input InstructBLIP's processor rule gives them."""
    from datamodules.loading import load_image_processor

    proc = load_image_processor(folder)
    frames = torch.randint(0, 256, (1, T, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    mean, std = torch.tensor(proc.image_mean).view(1, 3, 1, 1), torch.tensor(proc.image_std).view(1, 3, 1, 1)
    return frames, (frames[0].float() * proc.rescale_factor - mean) / std


def _question(folder: Path, text: str = "what is the colour of the star ?"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder / "qformer_tokenizer", local_files_only=True)
    enc = tok([text], return_tensors="pt")
    assert tok.unk_token_id not in enc["input_ids"][0].tolist()
    return enc["input_ids"], enc["attention_mask"]


# ------------------------------------------------------------------------------------------------ the tower


@pytest.mark.parametrize("feature_layer", [-1, -2])
def test_instructblip_folder_loads_as_the_tower(instructblip, feature_layer):
    """VisionEncoder on an InstructBLIP folder: [CLS] at 0, the patches after it, a layer's output before
    post_layernorm (InstructBlipVisionModel's hidden_states), the [CLS] attention of eager attention, and the mean
    and std of its BlipImageProcessor."""
    from datamodules.transforms import FrameTransform

    enc = VisionEncoder(str(instructblip), feature_layer=feature_layer)
    assert (enc.width, enc.num_patches, enc.has_cls) == (48, 16, True)
    assert type(enc.tower).__name__ == "InstructBlipVisionModel"
    transform = FrameTransform("processor", str(instructblip))
    assert (transform.image_size, transform.resize_mode) == (32, "squash")  # BLIP resizes to a square, no crop
    frames, pixels = _frames_and_pixels(instructblip)
    mask = torch.ones(1, 3, dtype=torch.bool)
    out = enc(frames, mask, mask, attention=True)
    vision = _reference(instructblip).vision_model
    vision.set_attn_implementation("eager")
    with torch.no_grad():
        ref = vision(pixel_values=pixels, output_hidden_states=True, output_attentions=True)
    hidden = ref.hidden_states[feature_layer]  # (T, 1 + 16, 48), before post_layernorm
    torch.testing.assert_close(out["cls"][0], hidden[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["frames"][0], hidden[:, 1:], atol=1e-5, rtol=1e-5)
    attn = ref.attentions[feature_layer][:, :, 0, 1:].mean(1)  # (T, heads, 17, 17) -> (T, 16)
    torch.testing.assert_close(out["cls_attn"][0], attn, atol=1e-5, rtol=1e-5)
    assert enc.tower.config._attn_implementation == "sdpa"  # restored after the attention pass


def test_a_folder_without_a_whole_vision_model_is_refused_as_the_tower(instructblip, tmp_path):
    only = _qformer_only(instructblip, tmp_path / "qformer")
    with pytest.raises(ValueError, match=r"Q-Former-only folder.*--model\.reducer\.init_args\.qformer") as err:
        VisionEncoder(str(only))
    assert str(only) in str(err.value) and "--model.vision_tower" in str(err.value)
    misshaped = tmp_path / "misshaped"  # a config that disagrees with the tensors (4 px patches: 64 positions)
    shutil.copytree(instructblip, misshaped)
    cfg = json.loads((misshaped / "config.json").read_text())
    cfg["vision_config"]["patch_size"] = 4
    (misshaped / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"mis-shaped 2 \(.*position_embedding.*--model\.vision_tower") as err:
        VisionEncoder(str(misshaped))
    assert str(misshaped) in str(err.value)


# ------------------------------------------------------------------------------------------------ the Q-Formers


def _assert_started_from(reducer_qformer, folder: Path, num_queries: int):
    own = reducer_qformer.qformer.state_dict()
    saved = _saved(folder, "qformer.")
    assert set(own) == set(saved)
    for k, v in saved.items():
        assert torch.equal(own[k], v), k
    assert torch.equal(reducer_qformer.query_tokens.data, _saved(folder, "query_tokens")[""][:, :num_queries])


@pytest.mark.parametrize("which", ["full", "qformer_only"])
def test_bvllm_starts_from_the_folder_and_gives_instructblips_qformer_output(instructblip, tmp_path, which):
    """Both Q-Formers and ln_vision equal the saved tensors (the checkpoint's shape wins over hidden_size=16); with
    uniform frames, B-VLLM's tokens are InstructBLIP's Q-Former output on each frame's post_layernorm'd patches,
    and two builds (other seeds) give identical outputs."""
    folder = instructblip if which == "full" else _qformer_only(instructblip, tmp_path / "qformer")
    build = functools.partial(BVLLM, 48, num_frames=3, num_tokens=4, budget=64, num_queries=6, hidden_size=16,
                              num_layers=1, num_heads=2, vocab_size=10, qformer=str(folder))
    selecting = build()
    for q in (selecting.temporal_qformer, selecting.spatial_qformer):
        _assert_started_from(q, folder, 6)
    ln = _saved(folder, "vision_model.post_layernorm.")
    assert torch.equal(selecting.ln_vision.weight.data, ln["weight"])
    assert torch.equal(selecting.ln_vision.bias.data, ln["bias"])
    assert selecting.out_dim == 32 and selecting.temporal_proj.in_features == 32
    torch.manual_seed(0)  # uniform frames: every tensor of the forward pass comes from the folder
    a = build(frame_selection=False).eval()
    torch.manual_seed(1)
    b = build(frame_selection=False).eval()
    g = torch.Generator().manual_seed(2)
    frames, cls = torch.randn(1, 3, 16, 48, generator=g), torch.randn(1, 3, 48, generator=g)
    mask = torch.ones(1, 3, dtype=torch.bool)
    ids, text_mask = _question(folder)
    with torch.no_grad():
        out_a, out_b = a(frames, cls, mask, ids, text_mask), b(frames, cls, mask, ids, text_mask)
        ref = _reference(instructblip)
        image_embeds = ref.vision_model.post_layernorm(frames[0])  # (T, N, 48): InstructBLIP's ln_vision
        q = ref.qformer(input_ids=ids.expand(3, -1), attention_mask=torch.cat([torch.ones(3, 4, dtype=torch.long),
                                                                              text_mask.expand(3, -1)], 1),
                        query_embeds=ref.query_tokens[:, :4].expand(3, -1, -1), encoder_hidden_states=image_embeds)
    expected = q.last_hidden_state[:, :4].reshape(1, 12, 32)  # (T, R, H) -> (1, T*R, H), time order
    assert out_a.token_mask.all() and out_a.tokens.shape == (1, 12, 32)
    torch.testing.assert_close(out_a.tokens, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(out_a.tokens, out_b.tokens)


def test_llamavid_starts_from_the_folder_and_its_qformer_reads_what_instructblips_reads(instructblip):
    """LLaMA-VID's Q-Former reads ln_vision([CLS]; patches): on the tower's last layer that is InstructBLIP's own
    image_embeds, so its query outputs equal InstructBLIP's Q-Former output end to end, from the same frames."""
    enc = VisionEncoder(str(instructblip), feature_layer=-1)
    torch.manual_seed(0)
    reducer = LLaMAVID(48, budget=64, num_queries=6, hidden_size=16, num_layers=1, num_heads=2, vocab_size=10,
                       qformer=str(instructblip)).eval()
    _assert_started_from(reducer.qformer, instructblip, 6)
    ln = _saved(instructblip, "vision_model.post_layernorm.")
    assert torch.equal(reducer.ln_vision.weight.data, ln["weight"])
    assert torch.equal(reducer.ln_vision.bias.data, ln["bias"])
    frames, pixels = _frames_and_pixels(instructblip)
    mask = torch.ones(1, 3, dtype=torch.bool)
    ids, text_mask = _question(instructblip)
    got = []
    hook = reducer.qformer.register_forward_hook(lambda m, a, o: got.append(o))
    with torch.no_grad():
        feats = enc(frames, mask, mask)
        reducer(feats["frames"], feats["cls"], mask, ids, text_mask)
        ref = _reference(instructblip)
        image_embeds = ref.vision_model(pixel_values=pixels).last_hidden_state  # post_layernorm'd, [CLS] first
        q = ref.qformer(input_ids=ids.expand(3, -1), attention_mask=torch.cat([torch.ones(3, 6, dtype=torch.long),
                                                                              text_mask.expand(3, -1)], 1),
                        query_embeds=ref.query_tokens.expand(3, -1, -1), encoder_hidden_states=image_embeds)
    hook.remove()
    torch.testing.assert_close(got[0], q.last_hidden_state[:, :6], atol=1e-5, rtol=1e-5)


def test_a_qformer_of_another_width_is_refused(instructblip):
    with pytest.raises(ValueError, match=r"qformer\) cross-attends to width 48.*--model\.vision_tower\) gives 64"):
        BVLLM(64, num_frames=2, num_tokens=2, budget=8, num_queries=6, qformer=str(instructblip))


# ------------------------------------------------------------------------------------------------ the real shapes


def _real_config(folder: Path) -> Path:
    """config.json only: InstructBLIP-Vicuna-7B's vision (EVA ViT-g/14, 224 px) and Q-Former (BERT-base) shapes."""
    from transformers import InstructBlipConfig

    InstructBlipConfig(
        vision_config=dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                           image_size=224, patch_size=14),
        qformer_config=dict(vocab_size=30523, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, encoder_hidden_size=1408, cross_attention_frequency=2),
        num_query_tokens=32,
    ).save_pretrained(folder)
    return folder


def test_the_paper_shapes_build_on_the_meta_device_from_a_config_alone(tmp_path):
    folder = _real_config(tmp_path / "instructblip")
    assert [p.name for p in folder.iterdir()] == ["config.json"]
    args = yaml.safe_load((EXPERIMENTS / "reducers" / "bvllm.yaml").read_text())["model"]["reducer"]["init_args"]
    with torch.device("meta"):
        bvllm = BVLLM(1408, **{**args, "qformer": str(folder)})
        llamavid = LLaMAVID(1408, qformer=str(folder))
    assert bvllm.out_dim == 768 and llamavid.out_dim == 1408
    for q in (bvllm.temporal_qformer, bvllm.spatial_qformer, llamavid.qformer):
        assert q.query_tokens.shape == (1, 32, 768) and q.hidden_size == 768
        cfg = q.qformer.config
        assert (cfg.num_hidden_layers, cfg.encoder_hidden_size, cfg.vocab_size) == (12, 1408, 30523)
        assert sum(hasattr(layer, "crossattention") for layer in q.qformer.encoder.layer) == 6
    assert bvllm.ln_vision.normalized_shape == (1408,) and bvllm.temporal_proj.weight.shape == (1408, 768)
    assert all(p.is_meta for p in bvllm.parameters())
    with pytest.raises(ValueError, match=r"lacks the weights of its vision model.*--model\.vision_tower"):
        VisionEncoder(str(folder))


# ------------------------------------------------------------------------------------------------ the configs


def _cli(args: list[str], run: bool = False):
    from lit_bvllm.cli.commands import lightning_cli

    return lightning_cli(args, run=run)


def test_the_question_tokenizer_defaults_to_the_checkpoints_and_must_fit_its_qformer(instructblip, tmp_path):
    """With qformer: set, --data.question_tokenizer defaults to <qformer>/qformer_tokenizer; one with more tokens
    than the checkpoint's Q-Former embeds, or other ids for its tokens, is refused before anything loads."""
    only = _qformer_only(instructblip, tmp_path / "qformer")
    base = ["--config", str(EXPERIMENTS / "pretrain.yaml"), "--model.llm", str(tmp_path / "llm"),
            "--model.vision_tower", str(tmp_path / "tower"), "--model.reducer.init_args.qformer", str(only),
            "--trainer.logger", "false"]
    cli = _cli(base)
    assert cli.datamodule.hparams.question_tokenizer == str(only / "qformer_tokenizer")
    assert cli.config.data.init_args.question_tokenizer == str(only / "qformer_tokenizer")  # config.yaml has it
    assert cli.model.model is None  # nothing loaded: the model is built in configure_model
    big = _bert_tokenizer(tmp_path / "big", WORDS + [f"w{i}" for i in range(40)])
    with pytest.raises(ValueError, match=r"--data\.question_tokenizer .* has \d+ tokens.*embeds 28.*"
                                         r"--model\.reducer\.init_args\.qformer"):
        _cli(base + ["--data.question_tokenizer", str(tmp_path / "big")])
    assert len(big) > 28
    _bert_tokenizer(tmp_path / "shuffled", WORDS[::-1])  # as many tokens, other ids
    with pytest.raises(ValueError, match=r"other ids than .*qformer_tokenizer.*--model\.reducer\.init_args\.qformer"):
        _cli(base + ["--data.question_tokenizer", str(tmp_path / "shuffled")])
    _bert_tokenizer(tmp_path / "prefix", WORDS[:10])  # a part of the checkpoint's vocabulary, with its ids: fine
    assert _cli(base + ["--data.question_tokenizer", str(tmp_path / "prefix")]).datamodule is not None


def test_the_reducers_vocabulary_follows_the_question_tokenizer_and_a_smaller_one_is_refused(tmp_path):
    _bert_tokenizer(tmp_path / "bert", WORDS)
    args = ["--config", str(EXPERIMENTS / "pretrain.yaml"), "--model.llm", str(tmp_path / "llm"),
            "--model.vision_tower", str(tmp_path / "tower"), "--data.question_tokenizer", str(tmp_path / "bert"),
            "--model.reducer.init_args.qformer", "null", "--trainer.logger", "false"]  # a random Q-Former
    with pytest.raises(ValueError, match=r"has 27 tokens.*embeds 20 \(--model\.reducer\.init_args\.vocab_size\)"):
        _cli(args + ["--model.reducer.init_args.vocab_size", "20"])
    assert _cli(args + ["--model.reducer.init_args.vocab_size", "27"]).datamodule.hparams.question_tokenizer
    # unset, the vocabulary is linked to the question tokenizer's (bvllm.yaml wrote 30523 by hand, which a Qwen2
    # tokenizer's ids overflow after the 7B model has loaded)
    assert _cli(args).config.model.reducer.init_args.vocab_size == 27


BACKBONES = sorted((EXPERIMENTS / "backbones").glob("*.yaml"))
QFORMER_REDUCERS = [["bvllm.yaml"], ["llamavid.yaml"]]  # in either order with a backbone


def test_the_paper_backbones_are_shipped():
    assert {p.stem for p in BACKBONES} >= {"qwen2_7b_clip336", "qwen2_7b_instructblip", "qwen2_7b_siglip"}


def _print_config(configs: list[str], capsys) -> dict:
    from lit_bvllm.cli import main

    args = ["fit"] + [a for c in configs for a in ("--config", str(EXPERIMENTS / c))] + ["--print_config"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda p: p.stem)
def test_every_backbone_composes_with_the_reducers_through_the_cli(backbone, capsys):
    """A backbone and a Q-Former reducer in either order (the backbone's tower and qformer:, the reducer's shape), an
    ablation after both; a reducer without a Q-Former after a backbone that sets qformer: drops it with the class."""
    own = yaml.safe_load(backbone.read_text())["model"]
    qformer = (own.get("reducer") or {}).get("init_args", {}).get("qformer")
    name = f"backbones/{backbone.name}"
    compositions = [order for r in QFORMER_REDUCERS
                    for order in ([name, f"reducers/{r[0]}"], [f"reducers/{r[0]}", name])]
    compositions.append(["reducers/bvllm.yaml", "reducers/bvllm_no_temporal_merge.yaml", name])
    for order in compositions:
        model = _print_config(["pretrain.yaml", *order], capsys)["model"]
        assert model["vision_tower"] == own["vision_tower"] and model["feature_layer"] == own["feature_layer"]
        assert model["reducer"]["init_args"]["qformer"] == qformer, order
        assert model["reducer"]["init_args"]["hidden_size"] == 768  # the reducer file's, whatever the order
    if qformer is not None:
        model = _print_config(["pretrain.yaml", name, "reducers/uniform.yaml"], capsys)["model"]
        assert model["reducer"]["class_path"].endswith("Uniform") and "qformer" not in model["reducer"]["init_args"]


def test_the_instructblip_backbone_reads_one_folder_at_the_last_layer():
    cfg = yaml.safe_load((EXPERIMENTS / "backbones" / "qwen2_7b_instructblip.yaml").read_text())
    model = cfg["model"]
    assert model["reducer"]["init_args"]["qformer"] == model["vision_tower"] and model["feature_layer"] == -1
    assert "question_tokenizer" not in cfg["data"]["init_args"]  # derived from the folder: one source of truth
    assert "qwen2_7b_instructblip.yaml" in (EXPERIMENTS / "reducers" / "bvllm.yaml").read_text()


def test_a_saved_position_ids_buffer_is_a_leftover_not_a_mismatch(tiny, tmp_path):
    """Older transformers saved the Q-Former's position_ids buffer with its weights (the released InstructBLIP
    snapshots may hold it); it is not a weight, so such a folder loads, to the same outputs."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny["qformer"], tmp_path / "qf")
    state = load_file(str(tmp_path / "qf" / "model.safetensors"))
    n = state["qformer.embeddings.position_embeddings.weight"].shape[0]
    save_file({**state, "qformer.embeddings.position_ids": torch.arange(n)[None]},
              str(tmp_path / "qf" / "model.safetensors"))
    from lit_bvllm.reducers.qformer import TextQFormer

    a = TextQFormer(64, num_queries=8, pretrained=tiny["qformer"])
    b = TextQFormer(64, num_queries=8, pretrained=str(tmp_path / "qf"))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name

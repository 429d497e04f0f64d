"""make-tiny: backbones and tokenizer written with save_pretrained load back through from_pretrained(local_path)."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, CLIPModel, CLIPVisionModel, Qwen2ForCausalLM

from lit_bvllm.backbones import VIDEO_TOKEN, load_image_processor, load_llm, load_tokenizer, load_vision_tower
from lit_bvllm.world.tiny import CHATML_TEMPLATE, build_tokenizer


def test_files_are_save_pretrained_folders(tiny):
    vision, llm = Path(tiny["vision"]), Path(tiny["llm"])
    for f in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"):
        assert (vision / f).is_file()  # a CLIP checkpoint as released: both towers, image processor, tokenizer
    for f in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (llm / f).is_file()
    assert json.loads((llm / "config.json").read_text())["model_type"] == "qwen2"
    assert json.loads((vision / "config.json").read_text())["model_type"] == "clip"
    assert len(tiny["clip_log"]) >= 1 and tiny["clip_log"][-1]["step"] == 2  # the few-step tower of the tests


def test_plain_hf_auto_classes_load_them(tiny):
    """The very entry points a real Qwen2 / CLIP checkpoint goes through."""
    assert isinstance(AutoModel.from_pretrained(tiny["vision"], local_files_only=True), CLIPModel)
    assert isinstance(CLIPVisionModel.from_pretrained(tiny["vision"], local_files_only=True), CLIPVisionModel)
    assert isinstance(AutoModelForCausalLM.from_pretrained(tiny["llm"], local_files_only=True), Qwen2ForCausalLM)
    tok = AutoTokenizer.from_pretrained(tiny["llm"], local_files_only=True)
    assert tok.chat_template == CHATML_TEMPLATE


def test_vision_tower_has_cls_and_patches(tiny):
    tower = load_vision_tower(tiny["vision"])
    proc = load_image_processor(tiny["vision"])
    import numpy as np

    pixels = proc(images=[np.zeros((96, 128, 3), np.uint8)] * 2, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 32, 32)
    out = tower(pixels, output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 1 + 16, 64)  # [CLS] + (32/8)^2 patches
    assert len(out.hidden_states) == 5  # embeddings + 4 layers: the LLM reads the penultimate


def test_llm_vocab_covers_tokenizer_and_runs(tiny, tokenizer):
    llm = load_llm(tiny["llm"])
    assert llm.config.vocab_size >= len(tokenizer) and llm.config.vocab_size % 64 == 0
    assert llm.config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = torch.tensor([tokenizer("What colour is the red star?")["input_ids"]])
    logits = llm(ids).logits
    assert logits.shape == (1, ids.shape[1], llm.config.vocab_size) and torch.isfinite(logits).all()


def test_tokenizer_special_tokens_and_chatml(tokenizer):
    for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", VIDEO_TOKEN):
        assert len(tokenizer(t, add_special_tokens=False)["input_ids"]) == 1, t
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": f"{VIDEO_TOKEN}\nHi"}, {"role": "assistant", "content": "Hello."}], tokenize=False
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<video>\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text  # byte-level BPE round-trips any text
    assert tokenizer.decode(tokenizer("naïve 東京 ✓")["input_ids"]) == "naïve 東京 ✓"


def test_saved_tokenizer_reads_back_with_the_ids_the_llm_was_warmed_up_on(tiny):
    """The LLM folder's config says qwen2, so the suite reads the tokenizer back as a Qwen2Tokenizer, rebuilt with
    Qwen2's pre-tokenizer. The warm-up's in-memory tokenizer must split text the same way (it split " 27" into one
    token and the reloaded one into three before the fix), numbers and all."""
    loaded = load_tokenizer(tiny["llm"])
    assert type(loaded).__name__ == "Qwen2Tokenizer"
    text = ("A video with an olive background. Briefly shown: a red ring at about 27 s, then a cyan triangle at "
            "about 104 s. How many times? 3. naïve")
    built = build_tokenizer()
    assert loaded(text)["input_ids"] == built(text)["input_ids"]
    assert loaded.convert_ids_to_tokens(loaded(" 27")["input_ids"]) == ["Ġ", "2", "7"]  # Qwen2: digit by digit


def test_tokenizer_build_is_deterministic():
    assert build_tokenizer().backend_tokenizer.to_str() == build_tokenizer().backend_tokenizer.to_str()


def test_placeholder_added_to_a_tokenizer_without_it(tmp_path):
    """A real checkpoint's tokenizer lacks the placeholder: it is added as one special token."""
    tok = build_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path, video_token="<vid_pad>")
    assert len(loaded) == len(tok) + 1
    vid = loaded.convert_tokens_to_ids("<vid_pad>")
    assert vid == len(tok)
    assert loaded("a <vid_pad> b", add_special_tokens=False)["input_ids"].count(vid) == 1


def test_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no hub downloads"):
        load_llm(tmp_path / "Qwen2-7B-Instruct")
    with pytest.raises(FileNotFoundError, match="set --model.llm"):
        load_tokenizer("Qwen/Qwen2-7B-Instruct")


def test_lm_warm_up_teaches_the_tiny_llm_its_language():
    from lit_bvllm.world.tiny import lm_corpus, warm_up_lm

    tok = build_tokenizer()
    torch.manual_seed(0)
    from transformers import Qwen2Config

    llm = Qwen2ForCausalLM(Qwen2Config(vocab_size=2048, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256))
    losses = warm_up_lm(llm, tok, steps=60, seed=0, batch_size=8, copy_steps=0, repeat_fraction=0.0, lr=3e-3)
    assert losses[0] > 6.0 and losses[-1] < 0.6 * losses[0]
    texts = lm_corpus(8, seed=0, tokenizer=tok)
    chat = [t for t in texts if t.startswith("<|im_start|>")]
    # conversations come through the tokenizer's own chat template (its default system turn included), as the data
    # module renders them; the rest repeat a description after a newline, as the plain pretraining format reads
    assert chat and all(t.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n") for t in chat)
    for t in set(texts) - set(chat):
        first, second = t.removesuffix(tok.eos_token).split("\n")
        assert first == second and first.startswith("A video")
    assert lm_corpus(8, seed=0, tokenizer=tok) == texts  # deterministic


def test_warm_up_targets_are_the_answers_only():
    """The warm-up's text targets are what the model says (every assistant turn, the plain format's second copy), never
    the descriptions it reads: with every token a target the LLM answered as well from another video's description
    as from its own. Without answer_labels every token of the text would be a target."""
    from lit_bvllm.world.tiny import answer_labels, lm_corpus

    tok = build_tokenizer()
    texts = lm_corpus(24, seed=0, tokenizer=tok)
    enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt", return_offsets_mapping=True)
    labels = answer_labels(texts, enc["input_ids"], enc["offset_mapping"])
    assert labels.shape == enc["input_ids"].shape and (labels[enc["attention_mask"] == 0] == -100).all()
    kinds = set()
    for text, ids, lab in zip(texts, enc["input_ids"], labels):
        said = tok.decode(lab[lab != -100])
        if text.startswith("<|im_start|>"):
            kinds.add("chat")
            turns = text.split("<|im_start|>assistant\n")[1:]
            assert len(turns) >= 1
            assert said == "".join(t[: t.index("<|im_end|>") + len("<|im_end|>")] for t in turns)
            assert "You are a helpful assistant" not in said and "user" not in said
        else:
            kinds.add("plain")
            first, second = text.split("\n")
            assert said == second and first + tok.eos_token == second
        assert (lab != -100).sum() < (ids != tok.pad_token_id).sum()  # the context is never a target
    assert kinds == {"chat", "plain"}


def test_reading_share_sets_the_share_of_reading_comprehension():
    from lit_bvllm.world.tiny import lm_corpus

    tok = build_tokenizer()
    needle_forms = ("briefly appears", "In which order", "How many times")
    share = {r: sum(any(f in t for f in needle_forms) for t in lm_corpus(100, seed=1, tokenizer=tok, reading_share=r))
             for r in (0.0, 1.0)}  # texts asking a needle question (the rest: videos without needles, text questions)
    assert share[1.0] >= 60 and share[0.0] <= 30
    with pytest.raises(ValueError, match="reading_share"):
        lm_corpus(4, seed=0, tokenizer=tok, reading_share=1.5)


def test_repeat_batches_can_only_be_predicted_by_copying():
    """The induction warm-up's batches: a prefix, then a random sequence said twice; only the second copy is a target,
    and every target token is the one that followed the same position's token in the first copy."""
    from lit_bvllm.world.tiny import repeat_batch

    g = torch.Generator().manual_seed(0)
    ids, labels = repeat_batch(2048, 5, g, prefix=3, length=7)
    assert ids.shape == labels.shape == (5, 3 + 2 * 7)
    assert (labels[:, :10] == -100).all() and torch.equal(labels[:, 10:], ids[:, 3:10])
    assert torch.equal(ids[:, 10:], ids[:, 3:10]) and ids.min() >= 8 and ids.max() < 2040  # no special tokens
    other, _ = repeat_batch(2048, 5, g, prefix=3, length=7)
    assert not torch.equal(other, ids)  # fresh sequences every batch: nothing to memorise

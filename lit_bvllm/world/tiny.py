"""Tiny local backbones: the suite's embedded default, built offline.

``lit_bvllm make-tiny --out DIR`` writes

- ``DIR/vision``: a CLIP checkpoint (``CLIPModel``: vision tower with a [CLS] token, text tower, their image
  processor and text tokenizer), pretrained contrastively on synthetic frames (:mod:`lit_bvllm.world.tiny_clip`), laid
  out as a released CLIP is; the suite reads its vision half as ``--model.vision_tower``;
- ``DIR/llm``: a Qwen2 causal LM, warmed up on repeated random tokens (induction) and synthetic-style text, and,
  beside it as in a real Qwen2 checkpoint, a byte-level BPE tokenizer trained here with the ``tokenizers`` library,
  with a ChatML chat template and the special tokens the suite needs;
- ``DIR/qformer``: a Q-Former pretrained over the tiny tower's tokens (:mod:`lit_bvllm.world.tiny_qformer`), written in
  InstructBLIP's layout (``qformer.*``, ``query_tokens``, ``vision_model.post_layernorm``, ``qformer_tokenizer/``),
  the miniature of the InstructBLIP Q-Former that B-VLLM's and LLaMA-VID's Q-Formers start from
  (``--model.reducer.init_args.qformer``).

Everything is written with ``save_pretrained`` and is meant to be read back with the loaders of
:mod:`lit_bvllm.backbones` — the same ``from_pretrained(local_path)`` path a real checkpoint takes.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import Tensor
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from lit_bvllm.backbones import VIDEO_TOKEN, load_tokenizer

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END, VIDEO_TOKEN]

# ChatML as Qwen2-Instruct renders it: a default system turn when the conversation brings none.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

_WORDS = """
a an the is are was were what which who where when how many much does do did it its this that these those there
video image frame frames second seconds first last before after then next during while between and or of in on at
to from with without by for about into over under left right up down moving moves move still static appears appear
appeared briefly shape shapes colour color colours background object objects count times once twice thrice order
circle square triangle star cross diamond ring heart ball box red green blue yellow orange purple pink cyan magenta
white black gray grey brown gradient dark light bright zero one two three four five six seven eight nine ten
eleven twelve plus minus equals answer question option options letter best choose select describe briefly
caption summary watch carefully you are helpful assistant user system yes no true false only directly give
""".split()


def _corpus(num_lines: int = 4000) -> list[str]:
    """Deterministic training text for the tiny tokenizer: the words the synthetic data uses, in varied phrases."""
    lines = [" ".join(_WORDS)]
    for i, (a, b, c) in enumerate(itertools.product(_WORDS[:60], _WORDS[60:120], _WORDS[120:])):
        if i >= num_lines:
            break
        lines.append(f"What {a} {b}? The {c} {b} {a}. {i} {i * 7 % 100}s, A. {b} B. {c}\n")
    return lines


def build_tokenizer(vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of Qwen2's kind (NFC, Qwen2's pre-tokenizer: digits one by one; any text encodes,
    no unknown token) with a ChatML template.

    The pre-tokenizer must be Qwen2's own: the saved folder is read back as a ``Qwen2Tokenizer`` (its config says
    ``qwen2``), which rebuilds the pipeline from the vocabulary and merges with Qwen2's rules. With GPT-2's byte-level
    regex the tiny LLM learnt " 27" as one token during its warm-up and read "Ġ", "2", "7" everywhere after.
    """
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[IM_START, VIDEO_TOKEN],
        model_max_length=4096,
        padding_side="right",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def lm_corpus(num_texts: int, seed: int, tokenizer, reading_share: float = 0.5) -> list[str]:
    """Text in the synthetic data's language, in the two formats the training stages feed the LLM:

    - LLaVA's ``plain`` format (stage 1), as repetition: a scene's description, a newline, the description again;
    - ChatML conversations rendered by ``tokenizer``'s own chat template (stage 2, so with its default system
      turn): the user's first turn holds a scene's description and a question, the assistant answers from it, and
      one or two more questions about the same scene may follow.

    ``reading_share`` of the texts are reading comprehension in the held-out needle set's forms (which shape was
    briefly shown, in which order, how many times, the background); the rest are split evenly between the plain
    repetition, "describe the scene" and the training set's other questions.

    A real LLM reads and repeats its context; this is how the tiny one learns to, so that visual tokens put where the
    description was (the projector's job) can be read the same way. Only words and grammar: the scenes are drawn
    here from their own random stream, never rendered, so nothing about a video's content leaks.
    """
    import numpy as np

    from lit_bvllm.world.annotations import CAPTION_PROMPTS
    from lit_bvllm.world.describe import caption, needle_set_qa, text_qa, video_qa
    from lit_bvllm.world.scenes import sample_video

    if not 0 <= reading_share <= 1:
        raise ValueError(f"reading_share={reading_share} must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    other = (1 - reading_share) / 3
    kinds = rng.choice(4, size=num_texts, p=[other, other, reading_share, other])  # plain, describe, reading, other
    texts = []
    for i, kind in enumerate(kinds):
        record = sample_video(rng, f"lm_{i}", "", "train", (8, 128), (4, 8), 128, 96, 0)
        scene = caption(record)
        if kind == 0:  # plain: the description at the placeholder's place, then the caption to learn
            texts.append(f"{scene}\n{scene}{tokenizer.eos_token}")
            continue
        if kind == 1:  # describe what the context shows
            pairs = [(CAPTION_PROMPTS[int(rng.integers(len(CAPTION_PROMPTS)))], scene)]
        elif rng.random() < 0.1:  # a question the context does not answer
            pairs, scene = [text_qa(rng)], ""
        elif kind == 2:  # reading comprehension in the held-out needle set's forms, every one of them
            pairs = needle_set_qa(record, rng)
            pairs = [pairs[int(k)] for k in rng.permutation(len(pairs))]
        else:  # questions about it
            qa = video_qa(record, rng)
            pairs = [qa[int(k)] for k in rng.permutation(len(qa))[: int(rng.integers(1, 4))]]
        messages = []
        for k, (q, a) in enumerate(pairs):
            user = f"{scene}\n{q}" if k == 0 and scene else q
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": a}]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return texts


def answer_labels(texts: list[str], input_ids: Tensor, offsets: Tensor) -> Tensor:
    """Next-token targets of :func:`lm_corpus`'s texts, tokenised with ``offsets`` (``return_offsets_mapping``):
    only what the model is to say is a target, as the suite's training stages label it — in a conversation every
    assistant turn (its answer and ``<|im_end|>``), in a plain text the caption after the newline (and the EOS); the
    system turn, the user turns with their descriptions, the template's markers and the padding are ``-100``."""
    labels = torch.full_like(input_ids, -100)
    opener = f"{IM_START}assistant\n"
    for i, text in enumerate(texts):
        if text.startswith(IM_START):
            spans, start = [], text.find(opener)
            while start >= 0:
                a = start + len(opener)
                b = text.index(IM_END, a) + len(IM_END)
                spans.append((a, b))
                start = text.find(opener, b)
        else:
            spans = [(text.index("\n") + 1, len(text))]
        lo, hi = offsets[i, :, 0], offsets[i, :, 1]
        target = torch.zeros(len(lo), dtype=torch.bool)
        for a, b in spans:
            target |= (lo >= a) & (hi <= b) & (hi > lo)
        labels[i, target] = input_ids[i, target]
    return labels


def repeat_batch(vocab: int, batch_size: int, generator: torch.Generator, prefix: int = 8, length: int = 16
                 ) -> tuple[Tensor, Tensor]:
    """``(input_ids, labels)`` of ``batch_size`` random token sequences, each ``prefix`` tokens then ``length`` tokens
    said twice (``(B, prefix + 2 * length)``); only the second copy is a target. Predictable only by finding the
    earlier occurrence of the current token and copying what came after it: the task that forms induction heads
    (Olsson et al. 2022), the circuit an LLM reads its context with."""
    ids = torch.randint(8, vocab - 8, (batch_size, prefix + length), generator=generator)  # (B, prefix + length)
    ids = torch.cat([ids, ids[:, prefix:]], 1)  # (B, prefix + 2 * length)
    labels = ids.clone()
    labels[:, : prefix + length] = -100
    return ids, labels


def warm_up_lm(llm: Qwen2ForCausalLM, tokenizer, steps: int, seed: int, batch_size: int = 16, copy_steps: int = 250,
               repeat_fraction: float = 0.25, lr: float = 1e-3) -> list[float]:
    """A next-token warm-up, so the tiny LLM is a (very small) pretrained language model, as a real checkpoint is,
    and one that reads its context: ``copy_steps`` steps (batch 32) of :func:`repeat_batch` first, which form
    induction heads, then ``steps`` steps of :func:`lm_corpus` with ``repeat_fraction`` of the batches still
    repeats, so the circuit is kept. Returns the loss every 50 steps.

    The text's targets are the answers only (:func:`answer_labels`), as the suite's own training stages label
    theirs: the loss is spent on reading the context, not on predicting the descriptions. On the shipped text alone
    (no repeats) the tiny LLM never formed the circuit, and with every token a target it formed it but answered
    with another video's description as well as with its own (``benchmarks/RESULTS.md``, "Does the tiny LLM read
    its context?")."""
    if steps + copy_steps <= 0:
        return []
    g = torch.Generator().manual_seed(seed)
    texts = lm_corpus(steps * batch_size // 4 + batch_size, seed, tokenizer)
    enc = tokenizer(texts, add_special_tokens=False, padding=True, truncation=True, max_length=256, return_tensors="pt",
                    return_offsets_mapping=True)
    targets = answer_labels(texts, enc["input_ids"], enc["offset_mapping"])
    lengths = enc["attention_mask"].sum(1)
    queue: list[Tensor] = []
    total = copy_steps + steps
    opt = torch.optim.AdamW(llm.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.05)
    llm.train()
    losses = []
    for step in range(total):  # a training loop over steps, not over samples: every step is one batch
        if step < copy_steps or torch.rand(1, generator=g).item() < repeat_fraction:
            ids, labels = repeat_batch(len(tokenizer), 32 if step < copy_steps else batch_size, g)
            mask = torch.ones_like(ids)
        else:
            if not queue:  # 8 batches at a time, drawn at random and grouped by length: less padding to compute
                draw = torch.randint(len(texts), (8 * batch_size,), generator=g)
                queue = list(draw[torch.argsort(lengths[draw], stable=True)].split(batch_size))
                queue = [queue[int(k)] for k in torch.randperm(len(queue), generator=g)]
            idx = queue.pop()
            ids, mask, labels = enc["input_ids"][idx], enc["attention_mask"][idx], targets[idx]
            n = int(mask.sum(1).max())  # right-padded: cut the batch to its longest text
            ids, mask, labels = ids[:, :n], mask[:, :n], labels[:, :n]
        loss = llm(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == total - 1:
            losses.append(round(loss.item(), 3))
    llm.eval()
    return losses


def make_tiny(
    out: str | Path,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 8,
    vision_width: int = 64,
    vision_layers: int = 4,
    clip_steps: int = 1000,
    clip_frames: int = 20000,
    clip_batch_size: int = 256,
    llm_width: int = 128,
    num_layers: int = 4,
    lm_steps: int = 1600,
    copy_steps: int = 250,
    qformer_steps: int = 600,
    qformer_frames: int = 10000,
) -> dict:
    """Write the tiny CLIP, LLM and tokenizer under ``out`` and return their folders and training logs.

    Args:
        out: output folder; ``out/vision`` and ``out/llm`` are created (overwritten if present).
        seed: seed of the random initialisation and of the pretraining data.
        image_size: input resolution of the vision tower (square; frames are resized without cropping).
        patch_size: ViT patch size; the tower emits ``(image_size/patch_size)**2`` patch tokens plus [CLS].
        vision_width: hidden size of the vision (and text) tower.
        vision_layers: transformer layers of the vision tower (the video LLM reads the penultimate).
        clip_steps: contrastive pretraining steps of the tiny CLIP (0: a randomly initialised tower; a few: a
            quick tower for tests).
        clip_frames: synthetic frames rendered for the CLIP pretraining (at most ``clip_steps * clip_batch_size``).
        clip_batch_size: frame/caption pairs per CLIP step.
        llm_width: hidden size of the LLM.
        num_layers: transformer layers of the LLM.
        lm_steps: language-model warm-up steps on synthetic-style text (0 with ``copy_steps`` 0: a randomly
            initialised LLM).
        copy_steps: warm-up steps on repeated random tokens before the text (:func:`warm_up_lm`).
        qformer_steps: pretraining steps of the tiny Q-Former (``out/qformer``, InstructBLIP's layout,
            :mod:`lit_bvllm.world.tiny_qformer`); 0 writes a randomly initialised one in the same layout.
        qformer_frames: synthetic frames the Q-Former pretrains on.
    """
    from lit_bvllm.world.tiny_clip import make_tiny_clip
    from lit_bvllm.world.tiny_qformer import make_tiny_qformer

    if image_size % patch_size:
        raise ValueError(f"--image_size {image_size} must be a multiple of --patch_size {patch_size}")
    out = Path(out)
    vision_dir, llm_dir = out / "vision", out / "llm"
    clip = make_tiny_clip(vision_dir, seed, image_size, patch_size, vision_width, vision_layers, clip_steps,
                          min(clip_frames, max(1, clip_steps) * clip_batch_size), clip_batch_size)
    torch.manual_seed(seed)

    tokenizer = build_tokenizer()
    vocab = -(-len(tokenizer) // 64) * 64  # pad the embedding table to a multiple of 64, as Qwen2 does
    llm_cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=llm_width,
        intermediate_size=3 * llm_width,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    llm = Qwen2ForCausalLM(llm_cfg)
    llm.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    tokenizer.save_pretrained(llm_dir)
    llm.config.save_pretrained(llm_dir)  # it says qwen2: from here on the tokenizer reads back as a Qwen2Tokenizer
    # warm up with the tokenizer exactly as the suite will load it, so the LLM learns the token ids it will be fed
    lm_losses = warm_up_lm(llm, load_tokenizer(llm_dir), lm_steps, seed, copy_steps=copy_steps)
    llm.save_pretrained(llm_dir)
    # the Q-Former reads the question with the tokenizer the data modules hand it: the LLM's (written above)
    qformer = make_tiny_qformer(out / "qformer", vision_dir, llm_dir, seed, steps=qformer_steps,
                                num_frames=qformer_frames, vocab_size=vocab)
    return {"vision": str(vision_dir), "llm": str(llm_dir), "tokenizer": str(llm_dir), "qformer": qformer["path"],
            "clip_log": clip["log"], "lm_warmup_loss": lm_losses, "qformer_log": qformer["log"]}

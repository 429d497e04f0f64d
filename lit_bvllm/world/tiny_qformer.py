"""A tiny pretrained Q-Former: the miniature of InstructBLIP's, for the embedded default's B-VLLM and LLaMA-VID.

B-VLLM starts both of its Q-Formers from InstructBLIP's pretrained one (Lu et al., §4); a randomly initialised
Q-Former in the tiny world lets almost nothing of a frame through to the LLM (``benchmarks/RESULTS.md``). This
module pretrains the suite's own :class:`~lit_bvllm.reducers.qformer.TextQFormer` (transformers'
``InstructBlipQFormerModel`` plus its learned queries) over the frozen tiny CLIP's tokens at the layer the video
LLM reads (-2), [CLS] and patches, through a LayerNorm trained with it (InstructBLIP's ``ln_vision``), on frames
drawn by the synthetic scene generator (:func:`lit_bvllm.world.tiny_clip.frame_record`) from their own random stream
(``[seed, QFORMER_STREAM, index]``, disjoint from make-synthetic's and the tiny CLIP's).

Objectives (``objectives``), after BLIP-2 (Li et al. 2023, §3.2) with InstructBLIP's instruction beside the
queries (Dai et al. 2023, §3.2):

- ``lm``, instruction-grounded generation: ``[queries | instruction | answer]`` in one pass, the queries and the
  instruction attending to each other (exactly what the reducers compute), the answer tokens to the queries, the
  instruction and the earlier answer tokens only (a 4-D additive mask); the answer, a caption or the answer to an
  instruction-style question (:func:`frame_qa`), is decoded by the Q-Former's text half through a tied LM head;
- ``itc``, image-text contrastive: the query outputs against the Q-Former's own unimodal encoding of the caption
  (text-only pass, mean-pooled), similarity = the best query (BLIP-2's max over queries), identical captions
  counted as positives;
- ``itm``, image-text matching: ``[queries | caption]`` bidirectional, a binary head on the mean query output,
  one negative caption per frame drawn from the batch by its contrastive similarity (BLIP-2's hard negatives);
- ``llm``, InstructBLIP's instruction tuning (Dai et al., §3.2; BLIP-2's generative stage, §3.3): the final
  query outputs, through a linear projection, are the soft prompt of the frozen tiny LLM (``tokenizer_dir``'s
  model), which decodes the answer after the instruction; the Q-Former, its LayerNorm and the projection learn;
- ``heads``: supervised linear heads on the mean query output (background, needle, shape, colour, place): the
  quick baseline, not a BLIP-2 objective.

With 2 layers and cross-attention in the first only, ``lm``'s answer tokens read the queries' first-layer outputs:
the final outputs, the ones the reducers pass on, learn only from ``itc``, ``itm``, ``llm`` or ``heads``. The
default is the combination that probed best within ``make demo``'s time (``benchmarks/probe_qformer.py``; the
numbers are in ``benchmarks/RESULTS.md``): within a minute or two on 2 cores the BLIP-2 objectives leave the
frame's content a small share of the query outputs, the learned queries dominating them as in a random Q-Former.

Every step uses the first ``k`` queries, ``k`` drawn from ``query_counts`` (B-VLLM reads the first R = 8 for
spatial sampling and the first L* = 16 for frame selection), and hides the [CLS] token on half the frames
(B-VLLM's spatial Q-Former reads the patches alone, LLaMA-VID's reads [CLS] and patches). The frames are encoded
once through the frozen tower and the Q-Former trains on the cached tokens.

The result is written in InstructBLIP's layout: ``config.json`` (``InstructBlipConfig``), ``model.safetensors``
holding only ``qformer.*``, ``query_tokens`` and ``vision_model.post_layernorm.*`` (the LayerNorm before the
Q-Former) under the keys ``InstructBlipForConditionalGeneration.save_pretrained`` uses, and the question tokenizer
under ``qformer_tokenizer/``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_bvllm.reducers.qformer import TextQFormer
from lit_bvllm.world.describe import NUMBER_WORDS, article, background_phrase, join
from lit_bvllm.world.scenes import NEEDLE_SHAPES
from lit_bvllm.world.tiny_clip import HEADS, frame_caption, frame_labels, frame_record, infonce, place, warmup_cosine

QFORMER_STREAM = 1001  # numpy stream id of the Q-Former's frames; make-synthetic uses 0-9, the tiny CLIP 1000
INSTRUCTION = "Describe this frame."  # the neutral instruction (the probe's)
CAPTION_PROMPTS = (INSTRUCTION, "Describe this image briefly.", "Give a short description of the image.",
                   "Describe this video briefly.", "What is shown in this video? Answer briefly.")
OBJECTIVES = ("lm", "itc", "itm", "llm", "heads")
DIRECTIONS = ("solid", "vertical", "horizontal")
QA_KINDS = 7  # question kinds per frame (frame_qa)


# ---------------------------------------------------------------------------------------------------- data


def _pick(rng: np.random.Generator, options: tuple) -> str:
    return options[int(rng.integers(len(options)))]


def frame_qa(record: dict, rng: np.random.Generator) -> list[tuple[str, str]]:
    """:data:`QA_KINDS` instruction-answer pairs about a still frame, one per kind (caption, background, needle
    presence, shape, colour, place, distractors), in the synthetic data's question forms
    (:mod:`lit_bvllm.world.describe`); the wording is drawn from ``rng``."""
    bg = background_phrase(record["background"])
    n = record["needles"][0] if record["needles"] else None
    asked = n["shape"] if n else _pick(rng, NEEDLE_SHAPES)
    ds = record["distractors"]
    w, h = record["width"], record["height"]
    return [
        (_pick(rng, CAPTION_PROMPTS), frame_caption(record)),
        (_pick(rng, ("What color is the background?", "Describe the background of the image.")), f"It is {bg}."),
        (_pick(rng, ("Is there a shape?", "Is there a triangle, star, cross, diamond or ring in the image?",
                     "Does any other shape briefly appear in the video?")),
         f"Yes, {article(n['colour'] + ' ' + n['shape'])}." if n else "No."),
        (_pick(rng, ("What shape is it?", "Which of these shapes briefly appears in the video?")),
         f"{article(n['shape'])}." if n else "no shape."),
        (f"What color is the {asked}?", f"It is {n['colour']}." if n else f"There is no {asked}."),
        ("Where is the shape?", f"At the {place(*n['position'], w, h)}." if n else "There is no shape."),
        ("How many circles and squares are in the image?",
         f"{NUMBER_WORDS[len(ds)].capitalize()}: {join([article(d['colour'] + ' ' + d['shape']) for d in ds])}."),
    ]


def render_frames(num_frames: int, seed: int, width: int = 128, height: int = 96) -> tuple[np.ndarray, list[dict]]:
    """``(frames (n, H, W, 3) uint8, records)``: still frames drawn as the tiny CLIP's are, from the Q-Former's own
    stream ``[seed, QFORMER_STREAM, i]``."""
    from lit_bvllm.world.render import render_image

    frames = np.empty((num_frames, height, width, 3), np.uint8)
    records = []
    for i in range(num_frames):  # rendering is numpy per frame, once, before training (not a forward pass)
        records.append(frame_record(np.random.default_rng([seed, QFORMER_STREAM, i]), width, height))
        frames[i] = render_image(records[-1])
    return frames, records


@torch.no_grad()
def encode_frames(frames: np.ndarray, vision_dir: str, feature_layer: int = -2, noise: float = 0.03,
                  seed: int = 0) -> Tensor:
    """The frozen tower's tokens ``(n, 1 + N, D)`` ([CLS] first, then the patches) at ``feature_layer`` for uint8
    ``frames (n, H, W, 3)``, resized and normalised as the tiny CLIP's pretraining frames are (the tower's
    processor statistics, squashed to its input size), with the same codec-like pixel noise."""
    from datamodules.transforms import FrameTransform
    from lit_bvllm.vision import VisionEncoder

    encoder = VisionEncoder(vision_dir, feature_layer, chunk=512)
    if not encoder.has_cls:
        raise ValueError(f"the Q-Former pretraining reads [CLS] and patches: '{vision_dir}' has no [CLS] token")
    transform = FrameTransform("plain", vision_dir)
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(frames), 2048):  # chunks of frames through the transform and the tower
        x = transform(frames[i : i + 2048])
        x = x + noise * torch.randn(x.shape, generator=g)
        mask = torch.ones(1, len(x), dtype=torch.bool)
        enc = encoder(x[None], mask, mask)
        out.append(torch.cat([enc["cls"][0][:, None], enc["frames"][0]], 1).float())  # (k, 1 + N, D)
    return torch.cat(out)


def _token_table(texts: list[str], tokenizer, prefix: list[int], suffix: list[int]) -> tuple[Tensor, Tensor]:
    """Right-padded ids ``(n, S)`` and mask of ``prefix + tokens(text) + suffix`` per text (unique texts encoded
    once)."""
    uniq = list(dict.fromkeys(texts))
    enc = tokenizer(uniq, add_special_tokens=True)["input_ids"]
    rows = {t: prefix + ids + suffix for t, ids in zip(uniq, enc)}
    width = max(len(r) for r in rows.values())
    pad = tokenizer.pad_token_id
    table = {t: r + [pad] * (width - len(r)) for t, r in rows.items()}
    ids = torch.tensor([table[t] for t in texts], dtype=torch.int32)
    mask = torch.tensor([[1] * len(rows[t]) + [0] * (width - len(rows[t])) for t in texts], dtype=torch.int8)
    return ids, mask


def _special_ids(tokenizer) -> tuple[int, int]:
    """``(start, end)`` of a decoded answer: the tokenizer's BOS (or [CLS], or ChatML's ``<|im_start|>``) and EOS."""
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    start = next((t for t in (tokenizer.bos_token_id, tokenizer.cls_token_id, im_start)
                  if t is not None and t != tokenizer.unk_token_id), None)
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if start is None or end is None:
        raise ValueError("the question tokenizer needs a start (BOS, [CLS] or <|im_start|>) "
                         "and an end token (EOS or [SEP])")
    return start, end


def _trim(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """A batch cut to its longest row (right padding), as int64 ids."""
    n = int(mask.sum(1).max())
    return ids[:, :n].long(), mask[:, :n].long()


# ---------------------------------------------------------------------------------------------------- model


def generation_mask(num_queries: int, instruction_mask: Tensor, answer_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive attention mask ``(B, 1, L, L)`` over ``[queries | instruction | answer]`` (L = k + S_i + S_a): the
    queries and the instruction see each other and not the answer (so their outputs are the reducers'), the answer
    sees the queries, the instruction and its own earlier tokens (BLIP-2's multimodal causal mask); padding is
    never seen."""
    B, Si = instruction_mask.shape
    k, Sa = num_queries, answer_mask.shape[1]
    L, dev = k + Si + Sa, answer_mask.device
    allowed = torch.ones(L, L, dtype=torch.bool, device=dev)
    allowed[: k + Si, k + Si :] = False
    allowed[k + Si :, k + Si :] = torch.ones(Sa, Sa, dtype=torch.bool, device=dev).tril()
    valid = torch.cat([torch.ones(B, k, dtype=torch.bool, device=dev), instruction_mask.bool(), answer_mask.bool()], 1)
    allowed = allowed[None] & valid[:, None, :]  # (B, L, L)
    return torch.zeros(B, 1, L, L, dtype=dtype, device=dev).masked_fill(~allowed[:, None], torch.finfo(dtype).min)


class QFormerPretraining(nn.Module):
    """``ln_vision`` -> :class:`TextQFormer` with BLIP-2's pretraining heads (contrastive projections, matching head,
    tied LM head) and the baseline's attribute heads; only ``ln_vision`` and the Q-Former are kept afterwards.

    Args:
        qformer: the Q-Former to pretrain (every parameter trains, its last text feed-forward included).
        width: width D of the tower's tokens.
        num_tokens: length of the question tokenizer (the LM head's classes).
        embed_dim: width of the contrastive embedding.
        llm: a frozen causal LM that decodes answers from the query outputs (the ``llm`` objective), or None.
    """

    def __init__(self, qformer: TextQFormer, width: int, num_tokens: int, embed_dim: int = 64,
                 llm: nn.Module | None = None):
        super().__init__()
        self.ln_vision = nn.LayerNorm(width)
        self.qformer = qformer.requires_grad_(True)
        H = qformer.hidden_size
        self.vision_proj, self.text_proj = nn.Linear(H, embed_dim), nn.Linear(H, embed_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.itm_head = nn.Linear(H, 2)
        self.lm_transform = nn.Sequential(nn.Linear(H, H), nn.GELU(), nn.LayerNorm(H))
        self.num_tokens = num_tokens
        self.lm_bias = nn.Parameter(torch.zeros(num_tokens))
        self.llm = llm.requires_grad_(False).eval() if llm is not None else None
        self.llm_proj = nn.Linear(H, llm.config.hidden_size) if llm is not None else None
        heads = {**HEADS, "direction": len(DIRECTIONS)}
        self.heads = nn.ModuleDict({k: nn.Linear(H, n) for k, n in heads.items()})

    def run(self, k: int, visual: Tensor, visual_mask: Tensor, ids: Tensor, mask: Tensor,
            answer: Tensor | None = None, answer_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``[first k queries | text (| answer)]`` over ``visual (B, L, D)`` (layer-normed here) -> query outputs
        ``(B, k, H)`` and, with an answer, its hidden states ``(B, S_a, H)``."""
        B = visual.shape[0]
        queries = self.qformer.query_tokens[:, :k].expand(B, -1, -1)
        if answer is None:
            attn = torch.cat([torch.ones(B, k, dtype=mask.dtype), mask], 1)
            text = ids
        else:
            attn = generation_mask(k, mask, answer_mask, queries.dtype)
            text = torch.cat([ids, answer], 1)
        out = self.qformer.qformer(input_ids=text, attention_mask=attn, query_embeds=queries,
                                   encoder_hidden_states=self.ln_vision(visual),
                                   encoder_attention_mask=visual_mask.long()).last_hidden_state
        return out[:, :k], (out[:, k + ids.shape[1] :] if answer is not None else None)

    def lm_loss(self, hidden: Tensor, answer: Tensor, answer_mask: Tensor) -> Tensor:
        """Summed next-token cross-entropy of the answer (after its start token), LM head tied to the word embeddings
        and restricted to the question tokenizer's ``num_tokens`` (the rest of the table is padding); logits are
        computed at the real answer positions only."""
        on = answer_mask[:, 1:].bool()  # (B, S_a - 1): positions that predict a real token
        h = self.lm_transform(hidden[:, :-1][on])  # (n, H)
        logits = h @ self.qformer.qformer.embeddings.word_embeddings.weight[: self.num_tokens].T + self.lm_bias
        return F.cross_entropy(logits, answer[:, 1:][on], reduction="sum")

    def llm_loss(self, z: Tensor, ids: Tensor, mask: Tensor, answer: Tensor, answer_mask: Tensor) -> Tensor:
        """Summed next-token cross-entropy of the answer decoded by the frozen LLM from ``[projected query outputs |
        instruction | answer]`` (InstructBLIP's instruction tuning, §3.2: the LLM reads the final query outputs)."""
        emb = self.llm.get_input_embeddings()
        x = torch.cat([self.llm_proj(z), emb(ids), emb(answer)], 1)
        attn = torch.cat([torch.ones(z.shape[:2], dtype=mask.dtype), mask, answer_mask], 1)
        start = z.shape[1] + ids.shape[1]  # the answer's start token: its logits predict the first answer token
        logits = self.llm(inputs_embeds=x, attention_mask=attn).logits[:, start : start + answer.shape[1] - 1]
        on = answer_mask[:, 1:].bool()
        return F.cross_entropy(logits[on].float(), answer[:, 1:][on], reduction="sum")

    def text_embedding(self, ids: Tensor, mask: Tensor) -> Tensor:
        """The Q-Former's unimodal encoding of a text, mean-pooled and projected: ``(B, E)``, L2-normalised."""
        out = self.qformer.qformer(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (out * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return F.normalize(self.text_proj(pooled), dim=-1)

    def similarity(self, z: Tensor, text: Tensor) -> Tensor:
        """Image-text similarity ``(B, B)``: the best query's cosine (BLIP-2), times the learned scale."""
        image = F.normalize(self.vision_proj(z), dim=-1)  # (B, k, E)
        return self.log_scale.exp().clamp(max=100) * torch.einsum("bqe,ce->bcq", image, text).amax(-1)


# ---------------------------------------------------------------------------------------------------- training


def query_overlap(z: Tensor) -> Tensor:
    """Mean squared cosine similarity between the query outputs of one input, ``z (B, k, H)``, over the pairs of
    distinct queries: 0 when they are orthogonal, 1 when they are all the same vector.

    InstructBLIP's queries come out different from each other (BLIP-2's contrastive loss takes the best query per
    caption, so queries specialise), and B-VLLM relies on it: its L* selection rows are the temporal Q-Former's
    query outputs, and identical outputs select one frame L* times (``benchmarks/RESULTS.md`` has what the heads
    objective alone did to them). Pulled down with the attribute heads, it keeps the queries apart while their
    mean carries the frame's content."""
    u = F.normalize(z.float(), dim=-1)
    gram = u @ u.transpose(1, 2)  # (B, k, k)
    k = z.shape[1]
    return (gram.pow(2).sum((1, 2)) - k).mean() / max(1, k * (k - 1))


def pretrain_qformer(model: QFormerPretraining, tokens: Tensor, data: dict[str, Tensor], steps: int,
                     objectives: tuple[str, ...] = ("heads",), batch_size: int = 128, lr: float = 1e-3,
                     query_counts: tuple[int, ...] = (8, 16), cls_drop: float = 0.5, seed: int = 0,
                     log_every: int = 100, distinct: float = 5.0) -> list[dict]:
    """Train ``model`` on the cached tower ``tokens (n, 1 + N, D)`` with ``data`` (:func:`make_tiny_qformer` builds
    it: question/answer/caption token tables and labels), plus ``distinct`` x :func:`query_overlap`. Returns the log
    every ``log_every`` steps."""
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad or not objectives:
        raise ValueError(f"objectives {list(objectives)}: choose from {list(OBJECTIVES)}")
    g = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    sched = warmup_cosine(opt, steps)
    n, L = tokens.shape[:2]
    model.train()
    if model.llm is not None:
        model.llm.eval()  # frozen, as InstructBLIP's LLM
    log, t0 = [], time.time()
    for step in range(steps):  # a loop over optimisation steps; every step is one batch
        idx = torch.randint(n, (batch_size,), generator=g)
        k = query_counts[int(torch.randint(len(query_counts), (1,), generator=g))]
        visual = tokens[idx]
        vmask = torch.ones(batch_size, L, dtype=torch.bool)
        vmask[:, 0] = torch.rand(batch_size, generator=g) >= cls_drop  # B-VLLM's spatial Q-Former sees no [CLS]
        kind = torch.randint(QA_KINDS, (batch_size,), generator=g)
        losses = {}
        if "lm" in objectives or "llm" in objectives:  # captions (kind 0) and short answers in two passes
            z = visual.new_zeros(batch_size, k, model.qformer.hidden_size)
            total = {o: 0.0 for o in ("lm", "llm") if o in objectives}
            count = 0
            for rows in ((kind == 0).nonzero()[:, 0], (kind != 0).nonzero()[:, 0]):
                if len(rows) == 0:
                    continue
                ids, mask = _trim(data["question"][idx[rows], kind[rows]], data["question_mask"][idx[rows], kind[rows]])
                answer, amask = _trim(data["answer"][idx[rows], kind[rows]], data["answer_mask"][idx[rows], kind[rows]])
                if "lm" in objectives:
                    z_rows, hidden = model.run(k, visual[rows], vmask[rows], ids, mask, answer, amask)
                    total["lm"] = total["lm"] + model.lm_loss(hidden, answer, amask)
                else:
                    z_rows, _ = model.run(k, visual[rows], vmask[rows], ids, mask)
                if "llm" in objectives:
                    total["llm"] = total["llm"] + model.llm_loss(z_rows, ids, mask, answer, amask)
                z = z.index_copy(0, rows, z_rows)
                count += int(amask[:, 1:].sum())
            losses.update({o: v / count for o, v in total.items()})
        else:
            ids, mask = _trim(data["question"][idx, kind], data["question_mask"][idx, kind])
            z, _ = model.run(k, visual, vmask, ids, mask)
        if "itc" in objectives or "itm" in objectives:
            cap, cmask = _trim(data["caption"][idx], data["caption_mask"][idx])
            same = data["caption_id"][idx][:, None] == data["caption_id"][idx][None, :]
            sim = model.similarity(z, model.text_embedding(cap, cmask))
            if "itc" in objectives:
                losses["itc"] = infonce(sim, same)
            if "itm" in objectives:  # one hard negative caption per frame, drawn by contrastive similarity
                with torch.no_grad():
                    weights = sim.float().softmax(1).masked_fill(same, 0) + 1e-6 * (~same)
                    neg = torch.multinomial(weights, 1, generator=g)[:, 0]
                half = batch_size // 2  # positives for the first half of the batch, negatives for the second
                pair = torch.cat([torch.arange(half), neg[half:]])
                out, _ = model.run(k, visual, vmask, cap[pair], cmask[pair])
                logits = model.itm_head(out).mean(1)  # (B, 2): mean over the queries (BLIP-2)
                losses["itm"] = F.cross_entropy(logits, (torch.arange(batch_size) < half).long())
        if "heads" in objectives:
            pooled = z.mean(1)
            losses["heads"] = sum(F.cross_entropy(head(pooled), data[name][idx]) for name, head in model.heads.items())
        if distinct > 0:
            losses["distinct"] = distinct * query_overlap(z)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            entry = {"step": step, **{o: round(v.item(), 3) for o, v in losses.items()},
                     "seconds": round(time.time() - t0, 1)}
            log.append(entry)
            print(f"  tiny Q-Former step {step:5d}: " + "  ".join(f"{o} {entry[o]:.3f}" for o in losses)
                  + f"  ({entry['seconds']} s)", flush=True)
    model.eval()
    return log


def build_data(records: list[dict], tokenizer, seed: int) -> dict[str, Tensor]:
    """Token tables of every frame's :func:`frame_qa` pairs ``(n, QA_KINDS, S)`` (answers wrapped in the start and
    end tokens), its caption ``(n, S)`` for the contrastive and matching objectives, and the heads' labels."""
    start, end = _special_ids(tokenizer)
    pairs = [frame_qa(r, np.random.default_rng([seed, QFORMER_STREAM, i, 1])) for i, r in enumerate(records)]
    n = len(records)
    q, qm = _token_table([p[0] for ps in pairs for p in ps], tokenizer, [], [])
    a, am = _token_table([p[1] for ps in pairs for p in ps], tokenizer, [start], [end])
    captions = [frame_caption(r) for r in records]
    c, cm = _token_table(captions, tokenizer, [], [end])
    uniq = {t: i for i, t in enumerate(dict.fromkeys(captions))}
    data = {"question": q.view(n, QA_KINDS, -1), "question_mask": qm.view(n, QA_KINDS, -1),
            "answer": a.view(n, QA_KINDS, -1), "answer_mask": am.view(n, QA_KINDS, -1),
            "caption": c, "caption_mask": cm, "caption_id": torch.tensor([uniq[t] for t in captions])}
    labels = [frame_labels(r) for r in records]
    for name in HEADS:
        data[name] = torch.tensor([lab[name] for lab in labels])
    data["direction"] = torch.tensor([DIRECTIONS.index(r["background"]["direction"]) for r in records])
    return data


# ---------------------------------------------------------------------------------------------------- writing


def save_qformer(out: str | Path, model: QFormerPretraining, tokenizer, vision_dir: str, tokenizer_dir: str) -> None:
    """Write ``model``'s LayerNorm and Q-Former in InstructBLIP's layout (module docstring)."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, InstructBlipConfig, InstructBlipVisionConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tower = AutoConfig.from_pretrained(vision_dir, local_files_only=True)
    tower = getattr(tower, "vision_config", tower)
    vision = InstructBlipVisionConfig(hidden_size=tower.hidden_size, intermediate_size=tower.intermediate_size,
                                      num_hidden_layers=tower.num_hidden_layers,
                                      num_attention_heads=tower.num_attention_heads,
                                      image_size=tower.image_size, patch_size=tower.patch_size)
    try:  # the question tokenizer's LLM (make-tiny's llm folder holds both)
        text = AutoConfig.from_pretrained(tokenizer_dir, local_files_only=True).to_dict()
    except (OSError, ValueError):
        text = None
    qf = model.qformer
    config = InstructBlipConfig(vision_config=vision.to_dict(), qformer_config=qf.qformer.config.to_dict(),
                                text_config=text, num_query_tokens=qf.query_tokens.shape[1])
    config.save_pretrained(out)
    state = {f"qformer.{k}": v for k, v in qf.qformer.state_dict().items()}
    state["query_tokens"] = qf.query_tokens.data
    state["vision_model.post_layernorm.weight"] = model.ln_vision.weight.data
    state["vision_model.post_layernorm.bias"] = model.ln_vision.bias.data
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    tokenizer.save_pretrained(out / "qformer_tokenizer")


def make_tiny_qformer(
    out: str | Path,
    vision_dir: str | Path,
    tokenizer_dir: str | Path,
    seed: int = 0,
    steps: int = 600,
    num_frames: int = 10000,
    batch_size: int = 128,
    objectives: tuple[str, ...] = ("heads",),
    num_queries: int = 16,
    query_counts: tuple[int, ...] = (8, 16),
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 2048,
    lr: float = 1e-3,
    feature_layer: int = -2,
    threads: int | None = 1,
) -> dict:
    """Pretrain a tiny Q-Former over the frozen tiny tower and write it to ``out`` in InstructBLIP's layout.

    Args:
        out: folder to write (config.json, model.safetensors, qformer_tokenizer/).
        vision_dir: the frozen vision tower (``make-tiny``'s ``vision``).
        tokenizer_dir: the question tokenizer's folder (the tiny LLM's, ``make-tiny``'s ``llm``).
        seed: seed of the initialisation, the frames and the batches.
        steps: training steps; 0 writes the randomly initialised Q-Former.
        num_frames: frames rendered and encoded once (each is seen ``steps * batch_size / num_frames`` times).
        batch_size: frames per step.
        objectives: any of ``lm`` (instruction-grounded generation in the Q-Former), ``itc`` (contrastive),
            ``itm`` (matching), ``llm`` (answers decoded by the frozen LLM in ``tokenizer_dir``), ``heads``
            (supervised attribute heads on the mean query output).
        num_queries: learned queries written (B-VLLM uses the first L* and the first R of them).
        query_counts: each step trains the first k queries, k drawn from these.
        hidden_size: Q-Former width.
        num_layers: Q-Former layers.
        num_heads: Q-Former attention heads.
        vocab_size: Q-Former vocabulary (at least the question tokenizer's length).
        lr: peak AdamW learning rate (warm-up over 5% of the steps, then cosine).
        feature_layer: the tower layer read (-2, as the video LLM reads it).
        threads: torch intra-op threads while this runs, restored afterwards (None: leave them); the Q-Former's
            matrices are too small to gain from more, and on shared cores more threads cost a lot.

    Returns the training log, the timings and what was written.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _make(out, vision_dir, tokenizer_dir, seed, steps, num_frames, batch_size, objectives, num_queries,
                     query_counts, hidden_size, num_layers, num_heads, vocab_size, lr, feature_layer)
    finally:
        torch.set_num_threads(before)


def _make(out, vision_dir, tokenizer_dir, seed, steps, num_frames, batch_size, objectives, num_queries, query_counts,
          hidden_size, num_layers, num_heads, vocab_size, lr, feature_layer) -> dict:
    """:func:`make_tiny_qformer`'s work, under its thread count."""
    from transformers import AutoConfig

    from lit_bvllm.backbones import load_llm, load_tokenizer

    t0 = time.time()
    if not objectives or any(o not in OBJECTIVES for o in objectives):
        raise ValueError(f"--objectives {list(objectives)}: choose from {list(OBJECTIVES)}")
    tokenizer = load_tokenizer(tokenizer_dir)
    if vocab_size < len(tokenizer):
        raise ValueError(f"--vocab_size {vocab_size} is below the question tokenizer's {len(tokenizer)} tokens "
                         f"('{tokenizer_dir}')")
    if max(query_counts) > num_queries:
        raise ValueError(f"--query_counts {list(query_counts)} asks for more than --num_queries {num_queries}")
    torch.manual_seed(seed)
    tower = AutoConfig.from_pretrained(vision_dir, local_files_only=True)
    width = getattr(tower, "vision_config", tower).hidden_size
    qformer = TextQFormer(width, num_queries, hidden_size, num_layers, num_heads, vocab_size)
    llm = load_llm(tokenizer_dir) if "llm" in objectives else None  # InstructBLIP's frozen LLM
    model = QFormerPretraining(qformer, width, len(tokenizer), llm=llm)
    log, timings = [], {}
    if steps > 0:
        frames, records = render_frames(num_frames, seed)
        timings["render"] = round(time.time() - t0, 1)
        tokens = encode_frames(frames, str(vision_dir), feature_layer, seed=seed)
        timings["encode"] = round(time.time() - t0 - timings["render"], 1)
        data = build_data(records, tokenizer, seed)
        print(f"  tiny Q-Former: {num_frames} frames rendered in {timings['render']} s, encoded at layer "
              f"{feature_layer} in {timings['encode']} s, {tokens.shape[1]} tokens each", flush=True)
        log = pretrain_qformer(model, tokens, data, steps, tuple(objectives), batch_size, lr, tuple(query_counts),
                               seed=seed)
    save_qformer(out, model, tokenizer, str(vision_dir), str(tokenizer_dir))
    timings["total"] = round(time.time() - t0, 1)
    return {"path": str(out), "steps": steps, "objectives": list(objectives), "frames": num_frames if steps > 0 else 0,
            "seconds": timings, "log": log}

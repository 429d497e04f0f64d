"""LLaVA-schema conversations to token ids and labels.

Schema (VideoLLaMA2 / Valley / LLaMA-VID / LLaVA): ``{"id", "video" | "image" | neither, "conversations":
[{"from": "human"|"gpt", "value"}, ...]}`` (``role``/``content`` turns are accepted too). A media entry has exactly
one tag — ``<video>``, or ``<image>`` as LLaMA-VID writes for videos too — in its first human turn; it becomes the
suite's placeholder token, moved to the head of that turn. Labels are built from per-turn spans: the chat template
is rendered for growing prefixes of the conversation and each new piece is tokenized on its own, so supervised
spans are exact by construction (no "tokenization mismatch" that silently masks a whole sample). Supervised: each
assistant reply and its end-of-turn tokens (``<|im_end|>\\n`` in ChatML); everything else is ``-100``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from datamodules.errors import SampleError

IGNORE_INDEX = -100
VIDEO_TOKEN = "<video>"
"""The placeholder the suite splices visual tokens at, the one default of every ``video_token`` argument. Media tags
in annotations (``<video>``, ``<image>``) map to it."""
MEDIA_TAGS = ("<video>", "<image>")
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_TAG_RE = re.compile("|".join(re.escape(t) for t in MEDIA_TAGS))


@dataclass
class Conversation:
    """A validated conversation: ``messages`` in HF chat format with the placeholder in place, and the question."""

    messages: list[dict[str, str]]
    question: str
    media: Literal["video", "image"] | None
    media_path: str | None


def check_text(text: str, field: str) -> None:
    """Raise a ``bad_text`` :class:`SampleError` unless ``text`` is valid Unicode.

    JSON may escape a lone surrogate (``"\\udcff"``); Python holds it in a ``str``, but it encodes to no UTF-8
    and the tokenizer rejects it with a bare ``TypeError``.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SampleError("bad_text", field, f"holds a lone surrogate {text[e.start]!r} at character {e.start}: "
                                             "not valid Unicode, so it cannot be tokenized") from None


def parse_entry(entry: dict, video_token: str) -> Conversation:
    """Validate one annotation entry and normalise its conversation. Raises :class:`SampleError`."""
    has_video, has_image = "video" in entry, "image" in entry
    if has_video and has_image:
        raise SampleError("bad_entry", "video/image", "entry has both a 'video' and an 'image' key")
    media = "video" if has_video else "image" if has_image else None
    media_path = entry.get(media) if media else None
    if media and (not isinstance(media_path, str) or not media_path):
        raise SampleError("bad_entry", media, f"expected a non-empty path string, got {media_path!r}")

    turns = entry.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise SampleError("bad_conversation", "conversations", "missing or empty list")
    messages = []
    for k, t in enumerate(turns):
        if not isinstance(t, dict):
            raise SampleError("bad_conversation", f"conversations[{k}]", "turn is not an object")
        role = _ROLES.get(t.get("from", t.get("role")))
        value = t.get("value", t.get("content"))
        if role is None or not isinstance(value, str):
            raise SampleError("bad_conversation", f"conversations[{k}]",
                              "needs 'from' in human/gpt/system and a string 'value'")
        check_text(value, f"conversations[{k}]")
        messages.append({"role": role, "content": value})
    system = messages[:1] if messages[0]["role"] == "system" else []
    body = messages[len(system) :]
    if len(body) < 2 or len(body) % 2:
        raise SampleError("bad_conversation", "conversations", f"needs human/gpt pairs, got {len(body)} turns")
    for k, m in enumerate(body):
        want = "user" if k % 2 == 0 else "assistant"
        if m["role"] != want:
            raise SampleError("bad_conversation", f"conversations[{k + len(system)}]",
                              f"expected a {want} turn, got {m['role']}")
        if want == "assistant" and not m["content"].strip():
            raise SampleError("bad_conversation", f"conversations[{k + len(system)}]", "empty answer")

    tag_turns = [k for k, m in enumerate(body) for _ in _TAG_RE.finditer(m["content"])]
    if media is None and tag_turns:
        raise SampleError("extra_tag", "conversations", "text-only entry (no 'video'/'image' key) contains a media tag")
    if media is not None:
        if not tag_turns:
            raise SampleError("missing_tag", "conversations[0]",
                              f"'{media}' entry has no <video>/<image> tag in its first human turn")
        if len(tag_turns) > 1 or tag_turns[0] != 0:
            raise SampleError("extra_tag", "conversations",
                              f"exactly one media tag is allowed, in the first human turn; found {len(tag_turns)}")
    first = body[0]["content"]
    question = _TAG_RE.sub("", first).strip()
    if media is not None:
        body[0] = {"role": "user", "content": f"{video_token}\n{question}"}
    return Conversation(system + body, question, media, media_path)


def _pieces_chat(tokenizer, messages: list[dict[str, str]]) -> list[tuple[list[int], bool]]:
    """Token pieces ``(ids, supervised)``: one per message, cut at the template's own prefix boundaries."""
    pieces, prev = [], ""
    for k, m in enumerate(messages):
        cur = tokenizer.apply_chat_template(messages[: k + 1], tokenize=False,
                                            add_generation_prompt=m["role"] == "user")
        if not cur.startswith(prev):
            raise ValueError(
                "the tokenizer's chat template does not render conversations prefix by prefix, so assistant spans "
                "cannot be located; use a ChatML-style template or --data.template=plain"
            )
        ids = tokenizer(cur[len(prev) :], add_special_tokens=False)["input_ids"]
        pieces.append((ids, m["role"] == "assistant"))
        prev = cur
    return pieces


def _pieces_plain(tokenizer, conv: Conversation, video_token: str) -> list[tuple[list[int], bool]]:
    """LLaVA's ``plain`` pretrain format: placeholder (or question), then the first answer and EOS, supervised."""
    body = [m for m in conv.messages if m["role"] != "system"]
    prompt = f"{video_token}\n" if conv.media else f"{conv.question}\n"
    answer = body[1]["content"] + tokenizer.eos_token
    return [
        (tokenizer(prompt, add_special_tokens=False)["input_ids"], False),
        (tokenizer(answer, add_special_tokens=False)["input_ids"], True),
    ]


def tokenize(
    tokenizer,
    conv: Conversation,
    template: Literal["chat", "plain"],
    video_token: str,
    max_length: int,
    visual_tokens: int,
) -> tuple[list[int], list[int], bool]:
    """Token ids and labels for ``conv``, truncated so that the spliced sequence fits ``max_length``.

    The placeholder is replaced by at most ``visual_tokens`` tokens, so a media sample keeps at most
    ``max_length - visual_tokens + 1`` text tokens. Truncation drops whole trailing (question, answer) pairs
    first; if even the first answer does not fit it is cut; if the prompt before it does not fit, the sample is
    ``too_long``. Returns ``(input_ids, labels, truncated)``.
    """
    pieces = (_pieces_plain(tokenizer, conv, video_token) if template == "plain"
              else _pieces_chat(tokenizer, conv.messages))
    budget = max_length - (visual_tokens - 1 if conv.media else 0)
    ids: list[int] = []
    labels: list[int] = []
    truncated = False
    first_answer = next(k for k, (_, sup) in enumerate(pieces) if sup)
    for k, (p, sup) in enumerate(pieces):
        if len(ids) + len(p) > budget:
            truncated = True
            if k < first_answer or (k == first_answer and len(ids) >= budget):
                raise SampleError("too_long", "conversations",
                                  f"the prompt needs {len(ids) + len(p)} tokens but only {budget} "
                                  f"fit (--data.max_length {max_length} minus --data.visual_tokens {visual_tokens})")
            if k == first_answer:
                p = p[: budget - len(ids)]
            else:  # drop this and every later turn; a dangling question without its answer goes too
                if not sup:
                    break
                while labels and labels[-1] == IGNORE_INDEX:
                    ids.pop(), labels.pop()
                break
        ids.extend(p)
        labels.extend(p if sup else [IGNORE_INDEX] * len(p))
        if truncated:
            break
    return ids, labels, truncated

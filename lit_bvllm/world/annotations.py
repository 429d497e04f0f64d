"""Training annotation files: pretrain captions and finetune QA in the VideoLLaMA2 and LLaMA-VID schemas.

Paths in entries are relative to the annotation file's folder (the dataset root).
"""

import numpy as np

from lit_bvllm.world.describe import caption, image_qa, needle_set_qa, text_qa, video_qa

CAPTION_PROMPTS = (
    "Describe this video briefly.",
    "Give a short description of the video.",
    "Summarize what happens in this clip.",
    "What is shown in this video? Answer briefly.",
)
IMAGE_CAPTION_PROMPTS = ("Describe this image briefly.", "Give a short description of the image.")


def _conversation(tag: str, pairs: list[tuple[str, str]]) -> list[dict]:
    """Human/gpt turns; `tag` ("<video>", "<image>" or "") opens the first human turn only."""
    turns = []
    for i, (question, answer) in enumerate(pairs):
        value = f"{tag}\n{question}" if i == 0 and tag else question
        turns += [{"from": "human", "value": value}, {"from": "gpt", "value": answer}]
    return turns


def pretrain_entries(videos: list[dict], images: list[dict], rng: np.random.Generator) -> list[dict]:
    """One caption pair per training video, then one per image (ids pt_0000, ...)."""
    entries = []
    for record in videos + images:
        key, prompts = ("video", CAPTION_PROMPTS) if record["kind"] == "video" else ("image", IMAGE_CAPTION_PROMPTS)
        prompt = prompts[int(rng.integers(len(prompts)))]
        entries.append({"id": f"pt_{len(entries):04d}", key: record["path"],
                        "conversations": _conversation(f"<{key}>", [(prompt, caption(record))])})
    return entries


def _turns(rng: np.random.Generator, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Half single-turn, half 2-3 turns: distinct pairs drawn from `pairs`."""
    k = 1 if rng.random() < 0.5 else int(rng.integers(2, 4))
    return [pairs[i] for i in rng.choice(len(pairs), size=min(k, len(pairs)), replace=False)]


def finetune_entries(videos: list[dict], images: list[dict], rng: np.random.Generator,
                     needle_set_entries: int = 2) -> list[dict]:
    """VideoLLaMA2/Valley finetune list: 2-3 QA entries per video plus ``needle_set_entries`` that ask every question
    form of the held-out needle set (``describe.needle_set_qa``: background, retrieval, counting, ordering; one turn
    each, in a random order), one per image, ~10% text-only; shuffled.

    Exactly one "<video>"/"<image>" tag, at the start of the first human turn; text-only entries have
    no media key and no tag. Ids ft_0000, ... follow the final (shuffled) order.
    """
    entries = []
    for record in videos:
        for _ in range(int(rng.integers(2, 4))):
            entries.append({"video": record["path"],
                            "conversations": _conversation("<video>", _turns(rng, video_qa(record, rng)))})
        for _ in range(needle_set_entries):  # the set's forms, so that a model learns to answer what it is asked
            pairs = needle_set_qa(record, rng)
            entries.append({"video": record["path"],
                            "conversations": _conversation("<video>",
                                                           [pairs[int(i)] for i in rng.permutation(len(pairs))])})
    for record in images:
        entries.append({"image": record["path"],
                        "conversations": _conversation("<image>", _turns(rng, image_qa(record, rng)))})
    for _ in range(max(1, len(entries) // 9)):
        entries.append({"conversations": _conversation("", [text_qa(rng)])})
    order = rng.permutation(len(entries))
    return [{"id": f"ft_{i:04d}", **entries[j]} for i, j in enumerate(order)]


def to_llamavid(entries: list[dict]) -> list[dict]:
    """LLaMA-VID schema: same entries, but video entries carry the "<image>" tag instead of "<video>"."""
    out = []
    for entry in entries:
        if "video" in entry:
            turns = [dict(t, value=t["value"].replace("<video>", "<image>")) for t in entry["conversations"]]
            entry = dict(entry, conversations=turns)
        out.append(entry)
    return out

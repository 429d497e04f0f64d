"""Multiple-choice video benchmarks scored by option likelihood; VNBench's reader.

Each item becomes one prompt (the question after the video placeholder, in the chat template, ending with the
assistant header) and K continuations (the option texts). The model scores each continuation by its mean token
log-likelihood and picks the best (lmms-eval's ``mcppl`` style), so an unparseable generation cannot happen.

A batch adds to the frame fields of :class:`~datamodules.video_instruct.VideoInstructCollator`::

    option_ids     (B*K, L) int64   prompt + option k, right-padded
    option_mask    (B*K, L) int64
    option_labels  (B*K, L) int64   -100 except on the option's tokens
    answers        (B,) int64       index of the right option (-1 when unknown)
    meta           list of dicts    id, group, category, error (a decode failure: the item counts as wrong)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.conversation import IGNORE_INDEX
from datamodules.errors import SampleError
from datamodules.transforms import FrameTransform
from datamodules.video import no_frames, read_video
from datamodules.video_instruct import VideoInstructCollator

log = logging.getLogger("lit_bvllm.data")


@dataclass
class MCItem:
    """One multiple-choice question about one video."""

    id: str
    video: str
    question: str
    options: list[str]
    answer: int  # -1 when the benchmark hides it
    group: str  # items scored together (VNBench: the 4 circular tries)
    category: str  # task / type for per-category accuracy


def read_vnbench(root: str | Path, annotation: str = "VNBench_qa.json") -> list[MCItem]:
    """VNBench's annotation (VideoNIAH ``VNBench_qa.json``): ``video, question, options, gt, type, try, question_id``."""
    root = Path(root)
    entries = json.loads((root / annotation).read_text())
    items = []
    for k, e in enumerate(entries):
        try:
            answer = e["options"].index(e["gt"]) if isinstance(e["gt"], str) else int(e["gt"])
        except (KeyError, ValueError) as err:
            raise ValueError(f"{root / annotation}: entry {k} ({e.get('question_id')}): 'gt' is not one of its options") from err
        qid = e["question_id"]
        group = qid.rsplit("_", 1)[0] if qid.endswith(f"_{e['try']}") else qid
        items.append(MCItem(qid, str(root / e["video"]), e["question"], list(e["options"]), answer, group, e["type"]))
    return items


class MultipleChoiceDataset(Dataset):
    """Items -> frames, question ids (for text-conditioned reducers) and one scored continuation per option."""

    def __init__(self, items: list[MCItem], tokenizer, transform: FrameTransform, frame_mode: str = "fps",
                 fps: float = 1.0, num_frames: int = 16, max_frames: int | None = 128, video_token: str = "<video>",
                 max_question_length: int = 64, blind: bool = False):
        self.items, self.tokenizer, self.transform = items, tokenizer, transform
        self.frame_mode, self.fps, self.num_frames, self.max_frames = frame_mode, fps, num_frames, max_frames
        self.video_token, self.max_question_length, self.blind = video_token, max_question_length, blind

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        error = None
        try:
            if self.blind:  # the language-prior baseline: the placeholder gets no visual tokens
                frames, times, duration = no_frames(), torch.zeros(0), 0.0
            else:
                frames, times, duration = read_video(item.video, self.frame_mode, self.fps, self.num_frames, self.max_frames)
        except SampleError as err:  # reported per id in the results; the run goes on
            log.warning("item %s: %s", item.id, err)
            frames, times, duration, error = no_frames(), torch.zeros(0), 0.0, f"{err.reason}: {err.detail}"
        tok = self.tokenizer
        prompt = tok.apply_chat_template([{"role": "user", "content": f"{self.video_token}\n{item.question}"}],
                                         tokenize=False, add_generation_prompt=True)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        options = [tok(o + tok.eos_token, add_special_tokens=False)["input_ids"] for o in item.options]
        q = tok(item.question, add_special_tokens=True, truncation=True, max_length=self.max_question_length)["input_ids"]
        return {
            "frames": self.transform(frames),
            "frame_times": torch.as_tensor(times, dtype=torch.float32),
            "input_ids": torch.tensor(p),
            "labels": torch.full((len(p),), IGNORE_INDEX),
            "question_ids": torch.tensor(q),
            "options": [(torch.tensor(p + o), torch.tensor([IGNORE_INDEX] * len(p) + o)) for o in options],
            "answer": item.answer,
            "meta": {"id": item.id, "group": item.group, "category": item.category, "error": error,
                     "question": item.question, "options": item.options, "duration": duration},
        }


class MultipleChoiceCollator(VideoInstructCollator):
    """Frames and prompts as :class:`VideoInstructCollator`, plus the flattened option continuations."""

    def __call__(self, samples: list[dict]) -> dict:
        batch = super().__call__(samples)
        seqs = [s for sample in samples for s in sample["options"]]
        batch["option_ids"], batch["option_mask"] = self._pad([a for a, _ in seqs], self.pad_id)
        batch["option_labels"], _ = self._pad([b for _, b in seqs], IGNORE_INDEX)
        batch["num_options"] = torch.tensor([len(s["options"]) for s in samples])
        batch["answers"] = torch.tensor([s["answer"] for s in samples])
        return batch


class VNBenchDataModule(L.LightningDataModule):
    """VNBench (or the synthetic needle set, written in its format), scored by option likelihood.

    Args:
        root: folder holding the annotation file; video paths in it are relative to this folder.
        tokenizer: local folder of the LLM's tokenizer.
        annotation: annotation file name inside ``root``.
        vision_tower: local folder of the vision tower (its image processor).
        transform: ``processor`` or ``plain`` (as in training).
        frame_mode: ``fps`` (B-VLLM evaluates at 1 fps) or ``uniform``.
        fps: frames per second in ``fps`` mode.
        num_frames: frames in ``uniform`` mode.
        max_frames: cap in ``fps`` mode (uniform thinning).
        batch_size: items per batch.
        num_workers: DataLoader workers.
        limit: evaluate only the first ``limit`` items (quick checks).
        video_token: placeholder token.
        blind: give the model no frames (the language-prior baseline a score should beat).
    """

    name = "vnbench"

    def __init__(self, root: str, tokenizer: str, annotation: str = "VNBench_qa.json", vision_tower: str | None = None,
                 transform: str = "processor", frame_mode: str = "fps", fps: float = 1.0, num_frames: int = 16,
                 max_frames: int | None = 128, batch_size: int = 4, num_workers: int = 1, limit: int | None = None,
                 video_token: str = "<video>", blind: bool = False):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        from lit_bvllm.backbones import load_tokenizer

        h = self.hparams
        self.tokenizer = load_tokenizer(h.tokenizer, h.video_token)
        transform = FrameTransform(h.transform, h.vision_tower)
        items = read_vnbench(h.root, h.annotation)[: h.limit]
        self.test_set = MultipleChoiceDataset(items, self.tokenizer, transform, h.frame_mode, h.fps, h.num_frames,
                                              h.max_frames, h.video_token, blind=h.blind)
        self.collator = MultipleChoiceCollator(self.tokenizer.pad_token_id, transform.image_size)

    def test_dataloader(self) -> DataLoader:
        h = self.hparams
        return DataLoader(self.test_set, batch_size=h.batch_size, shuffle=False, num_workers=h.num_workers,
                          collate_fn=self.collator)

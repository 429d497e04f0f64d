"""Zero-shot evaluation data: one LightningDataModule for every benchmark, which it is given as a component.

``BenchmarkDataModule(benchmark=VNBench(root=...), ...)``: the benchmark (:mod:`datamodules.benchmarks.base`, one
module each) reads its items and writes its prompts; this module turns them into batches for ``lit_bvllm test``
and builds the :class:`~datamodules.benchmarks.evaluator.Evaluator` (``evaluator``) that the test callback
(``lit_bvllm.training.callbacks.BenchmarkEvaluation``) scores the model's answers with:

- ``mode="generate"`` (the papers' protocol): the benchmark's reference prompt in the chat template, ending with
  the assistant header; the model answers greedily and the answer is parsed;
- ``mode="likelihood"`` (multiple choice only, lmms-eval's ``mcppl``): the question alone as the prompt and one
  continuation per option, scored by mean token log-likelihood, so no answer can go unparsed.

A batch holds the frame fields of :class:`~datamodules.video_instruct.VideoInstructCollator` (prompts left-padded
for batched generation), plus ``index`` (each item's position in the benchmark, for the metric states),
``frame_evidence (B, T) bool`` when every item of the batch says where its needles are
(``extra["needle_times"]``, the synthetic needle sets: True on the sampled frames inside a needle span, False on
padding; the oracle control reads it, :class:`lit_bvllm.reducers.Uniform`) and, in likelihood mode, the option
continuations of
``option_ids`` / ``option_mask`` / ``option_labels`` ``(sum_b K_b, L)`` (prompt + option k, right-padded, labels
-100 except on the option's tokens), and ``num_options`` ``(B,)``.

In likelihood mode the prompt does not show the options, so items that differ only in the order of their options
(VNBench's circular tries) have equal option scores: they run as one request (:class:`Requests`), decoded and
scored once, and the evaluator gives each item its options' scores in its own order (``members``, ``orders``).

Multi-process evaluation shards the items (requests) without padding (rank ``r`` of ``W`` gets items ``r, r + W,
...``), so no item is scored twice and none is lost; the model gathers the shards.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.benchmarks.base import Benchmark, MultipleChoiceBenchmark
from datamodules.benchmarks.evaluator import Evaluator, unreadable_report
from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.prompts import with_subtitles
from datamodules.benchmarks.reading import confine_media
from datamodules.benchmarks.selection import in_spans
from datamodules.conversation import IGNORE_INDEX, VIDEO_TOKEN
from datamodules.errors import SampleError
from datamodules.loading import processes_on_node, share_cores, worker_count
from datamodules.transforms import FrameTransform
from datamodules.video import FrameSampling, no_frames, read_video
from datamodules.video_instruct import VideoInstructCollator

log = logging.getLogger("lit_bvllm.data")


class BenchmarkDataset(Dataset):
    """Items -> frames, the prompt, question ids for text-conditioned reducers and, in likelihood mode, options.

    Args:
        items: the benchmark's items.
        benchmark: the benchmark (its prompts, and the subtitles it shows).
        tokenizer: the LLM's tokenizer (with the chat template).
        transform: frames -> tower input.
        mode: ``generate`` or ``likelihood``.
        sampling: which frames are decoded (:class:`datamodules.video.FrameSampling`).
        question_tokenizer: tokenizer of the reducer's question input (default: ``tokenizer``).
        max_question_length: question tokens kept.
        video_token: placeholder token.
        blind: give the model no frames (the language-prior baseline).
        allow_outside_root: read media that resolve outside the benchmark's ``media_roots()``; False: such an
            item is an error item (``path_escape``), read nothing of. ``refusals`` maps their positions to why.
        decoder: ``decord`` or ``torchcodec`` (the same frames; :func:`datamodules.video.read_video`).
    """

    def __init__(self, items: list[EvalItem], benchmark: Benchmark, tokenizer, transform: FrameTransform,
                 mode: Literal["generate", "likelihood"] = "generate",
                 sampling: FrameSampling = FrameSampling(max_frames=128), question_tokenizer=None,
                 max_question_length: int = 64, video_token: str = VIDEO_TOKEN, blind: bool = False,
                 allow_outside_root: bool = False, decoder: str = "decord"):
        self.items, self.benchmark, self.tokenizer, self.transform = items, benchmark, tokenizer, transform
        self.decoder = decoder
        self.mode, self.sampling, self.blind = mode, sampling, blind
        self.refusals = {} if allow_outside_root else refusals(items, benchmark.media_roots())
        self.question_tokenizer = question_tokenizer or tokenizer
        self.max_question_length, self.video_token = max_question_length, video_token
        self._last = None  # (key, frames) of the last video read: see frames()

    def __len__(self) -> int:
        return len(self.items)

    def frames(self, item: EvalItem):
        """``(tower input, times, error)``; a missing or undecodable video gives no frames and an error string.

        The last video read is kept: a benchmark asks several questions about one video (VNBench's 4 circular tries
        of 3 tasks; MVBench, Video-MME), and its items come in file order, so each video is decoded once, not once
        per question."""
        if self.blind:
            return self.transform(no_frames()), torch.zeros(0), None
        key = (item.video, item.start, item.end, item.frame_fps)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        try:
            frames, times, _ = read_video(item.video, self.sampling, item.start, item.end, frame_fps=item.frame_fps,
                                          decoder=self.decoder)
            out = self.transform(frames), torch.as_tensor(times, dtype=torch.float32), None
        except SampleError as err:  # reported per id in the results; the run goes on
            log.warning("item %s: %s", item.id, err)
            out = self.transform(no_frames()), torch.zeros(0), f"{err.reason}: {err.detail}"
        self._last = (key, out)
        return out

    def prompt(self, item: EvalItem, times, subtitles: bool = True) -> str:
        """The user turn after the placeholder: the reference prompt, or the bare question in likelihood mode (after
        the subtitles shown at the sampled frames, where the benchmark shows them, unless ``subtitles`` is False)."""
        subs = self.benchmark.frame_subtitles(item, times) if subtitles else None
        if self.mode == "likelihood":
            return item.question if subs is None else with_subtitles(item.question, subs)
        return self.benchmark.prompt(item, subs)

    def __getitem__(self, i: int) -> dict:
        if i == len(self.items):  # ShardSampler's stand-in for a rank with no items: scored by nobody
            return {**self[0], "index": PADDING}
        item = self.items[i]
        if refused := self.refusals.get(i):  # nothing of it is read, its subtitles neither (blind mode too)
            frames, times, error = self.transform(no_frames()), torch.zeros(0), refused
        else:
            frames, times, error = self.frames(item)
        text = self.prompt(item, times, subtitles=refused is None)
        ids = self.prompt_ids(text)
        spans = item.extra.get("needle_times")
        sample = {
            "frames": frames,
            "frame_times": times,
            "input_ids": torch.tensor(ids),
            "labels": torch.full((len(ids),), IGNORE_INDEX),
            "question_ids": torch.tensor(self.question_ids(item)),
            "index": i,
            "meta": {"id": item.id, "error": error, "prompt": text, "options": item.options, "answer": item.answer,
                     "needle_times": spans},
        }
        if spans is not None:
            sample["frame_evidence"] = frame_evidence(times, spans)
        if self.mode == "likelihood":
            sample["options"] = self.option_sequences(ids, item.options)
        return sample

    def prompt_ids(self, text: str) -> list[int]:
        """The user turn (placeholder, then ``text``) in the chat template, ending with the assistant header."""
        tok = self.tokenizer
        chat = tok.apply_chat_template([{"role": "user", "content": f"{self.video_token}\n{text}"}],
                                       tokenize=False, add_generation_prompt=True)
        return tok(chat, add_special_tokens=False)["input_ids"]

    def question_ids(self, item: EvalItem) -> list[int]:
        """The question alone, for a text-conditioned reducer, in its question tokenizer."""
        return self.question_tokenizer(item.question, add_special_tokens=True, truncation=True,
                                       max_length=self.max_question_length)["input_ids"]

    def option_sequences(self, ids: list[int], options: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Likelihood mode: per option, the prompt followed by the option and EOS, labelled on the option only."""
        tok = self.tokenizer
        out = []
        for option in options:
            o = tok(option + tok.eos_token, add_special_tokens=False)["input_ids"]
            out.append((torch.tensor(ids + o), torch.tensor([IGNORE_INDEX] * len(ids) + o)))
        return out


def identical_requests(items: list[EvalItem], refused: dict[int, str]) -> list[list[int]]:
    """Likelihood mode: the items whose option scores are equal, in groups of positions (first appearance order).
    Their prompt is the bare question, so two items with the same video, clip, frame rate, subtitles, question,
    needle spans and options (in any order; each option once) score alike. A refused item stays alone."""
    groups: dict[object, list[int]] = {}
    for i, it in enumerate(items):
        same = len(set(it.options)) == len(it.options) and i not in refused
        key = ((it.video, it.start, it.end, it.frame_fps, it.subtitles, it.question, tuple(sorted(it.options)),
                json.dumps(it.extra.get("needle_times"))) if same else ("alone", i))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


class Requests(Dataset):
    """The items of a :class:`BenchmarkDataset` as requests: each group of :func:`identical_requests` is one sample
    (its first item's), with ``members`` (the items' positions) and ``orders`` (per member, where each of its options
    stands among the sample's). VNBench's 4 circular tries are decoded and scored once, not 4 times."""

    def __init__(self, dataset: BenchmarkDataset):
        self.dataset = dataset
        self.groups = identical_requests(dataset.items, dataset.refusals)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, r: int) -> dict:
        if r == len(self.groups):  # ShardSampler's stand-in
            return self.dataset[len(self.dataset.items)]
        members = self.groups[r]
        items = self.dataset.items
        sample = self.dataset[members[0]]
        sample["members"] = members
        sample["orders"] = [[items[members[0]].options.index(o) for o in items[m].options] for m in members]
        return sample


def frame_evidence(times: torch.Tensor, spans: list[list[float]]) -> torch.Tensor:
    """``(T,) bool``: which frames, decoded at ``times`` (seconds), lie inside one of the ``[start, end)`` needle spans
    (:func:`~datamodules.benchmarks.selection.in_spans`, the hit rate's rule)."""
    return torch.from_numpy(in_spans(times.numpy(), spans).any(1))


def refusals(items: list[EvalItem], roots: list[str]) -> dict[int, str]:
    """``{position: "path_escape: ..."}`` of the items whose video, frames or subtitles resolve outside ``roots``
    (:func:`~datamodules.benchmarks.reading.confine_media`), checked once before anything is read."""
    out = {}
    for i, item in enumerate(items):
        try:
            confine_media(item.video, item.subtitles, roots)
        except SampleError as err:
            out[i] = f"{err.reason}: {err.detail}"
    return out


class OptionsCollator(VideoInstructCollator):
    """Frames and prompts as :class:`VideoInstructCollator`, plus every item's option continuations, flattened."""

    def __call__(self, samples: list[dict]) -> dict:
        batch = super().__call__(samples)
        seqs = [s for sample in samples for s in sample["options"]]
        batch["option_ids"], batch["option_mask"] = self._pad([a for a, _ in seqs], self.pad_id)
        batch["option_labels"], _ = self._pad([b for _, b in seqs], IGNORE_INDEX)
        batch["num_options"] = torch.tensor([len(s["options"]) for s in samples])
        return batch


class BenchmarkCollator:
    """Left-padded prompts (batched generation) or the option continuations (likelihood), plus item positions."""

    def __init__(self, pad_id: int, image_size: int, mode: str, question_pad_id: int | None = None):
        cls = OptionsCollator if mode == "likelihood" else VideoInstructCollator
        self.inner = cls(pad_id, image_size, padding_side="left" if mode == "generate" else "right",
                         question_pad_id=question_pad_id)

    def __call__(self, samples: list[dict]) -> dict:
        batch = self.inner(samples)
        batch["index"] = torch.tensor([s["index"] for s in samples])
        if any("members" in s for s in samples):  # requests (likelihood mode): the items each one answers
            batch["members"] = [s.get("members", [s["index"]]) for s in samples]
            batch["orders"] = [s.get("orders", [list(range(len(s["options"])))]) for s in samples]
        if all("frame_evidence" in s for s in samples):  # frames are right-padded: so is their evidence
            evidence = torch.zeros(batch["frame_mask"].shape, dtype=torch.bool)
            for b, s in enumerate(samples):
                evidence[b, : len(s["frame_evidence"])] = s["frame_evidence"]
            batch["frame_evidence"] = evidence
        return batch


PADDING = -1
"""``index`` of the stand-in sample a rank without items runs (its answer is dropped by the evaluator)."""


class ShardSampler(torch.utils.data.Sampler):
    """Rank ``r`` of ``W`` takes items ``r, r + W, ...``: every item exactly once over all ranks, no padding.

    A rank left without items (fewer items than ranks) runs one stand-in, index ``n`` (the dataset gives it item 0
    with ``index`` :data:`PADDING`, and nobody scores it): a rank with an empty loader would skip the test epoch and
    never reach the collective gather of the others, which would wait for it for ever.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, n, world_size)) or [n]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class BenchmarkDataModule(L.LightningDataModule):
    """A benchmark's items as batches for ``lit_bvllm test``, and the evaluator that scores the model's answers.

    The benchmark is a component, chosen by ``class_path`` in the config; everything else is how its videos and
    prompts become batches, the same for every benchmark::

        data:
          class_path: datamodules.benchmarks.BenchmarkDataModule
          init_args:
            benchmark:
              class_path: datamodules.benchmarks.VNBench
              init_args:
                root: artifacts/synthetic/eval/vnbench

    After ``setup``: ``items`` (the benchmark's, up to ``limit``), ``evaluator`` (``new_metric``, ``score``,
    ``aggregate``, ``submission``, ``describe``) and ``name`` (the benchmark's, in output file names).

    Args:
        benchmark: the benchmark (``datamodules.benchmarks.MVBench``, ``VideoMME``, ``EgoSchema``,
            ``PerceptionTest``, ``NExTQA``, ``VNBench``, ``MSVDQA``, ``MSRVTTQA``, ``ActivityNetQA``, or your own
            subclass of ``MultipleChoiceBenchmark`` / ``OpenEndedBenchmark``) with its options.
        tokenizer: local folder of the LLM's tokenizer.
        mode: ``generate`` (reference prompt, greedy answer, parsed letter) or ``likelihood`` (option scores;
            multiple choice only).
        vision_tower: local folder of the vision tower (its image processor).
        transform: ``processor`` or ``plain``, as in training.
        frame_mode: ``fps`` (B-VLLM evaluates at 1 fps) or ``uniform``.
        fps: frames per second in ``fps`` mode.
        num_frames: frames in ``uniform`` mode.
        max_frames: cap in ``fps`` mode (uniform thinning over the whole video).
        batch_size: items per batch.
        num_workers: DataLoader workers; ``auto``: follow the machine (:func:`~datamodules.loading.worker_count`).
        limit: evaluate only the first ``limit`` items (quick checks), with every item of their groups: VNBench's 4
            circular tries of a question are kept together, so a circular score is never made of part of a group.
        question_tokenizer: tokenizer folder for a text-conditioned reducer's question (default: the LLM's).
        max_question_length: question tokens kept.
        video_token: placeholder token.
        blind: give the model no frames (the language-prior baseline a score should beat).
        allow_outside_root: read videos, frame folders and subtitles wherever their paths lead. False (the
            default): one that resolves (symlinks followed, ``..`` and absolute paths included) outside the
            benchmark's ``root`` (MVBench: or its ``video_root``) is not read; its item is an error item, reported
            by id in ``error_ids`` and counted wrong, as a missing video is, and the run goes on. The training data's
            rule, ``path_escape``.
        max_unreadable_fraction: the largest share of the benchmark's videos that may be missing or unreadable. Over
            it, a run stops with an error naming the folder it looked in and a few of the missing paths: before the
            model loads when the files are not there, and before scoring when they fail to decode (the predictions
            are written, the results are not). Under it, the items count as wrong and are listed in ``error_ids``.
            The count is printed at the end of every run. Blind runs read no video and are not checked.
        decoder: ``decord`` or ``torchcodec``: the video decoder (the same frames, as in training).
    """

    def __init__(self, benchmark: Benchmark, tokenizer: str, mode: Literal["generate", "likelihood"] = "generate",
                 vision_tower: str | None = None, transform: Literal["processor", "plain"] = "processor",
                 frame_mode: Literal["fps", "uniform"] = "fps", fps: float = 1.0, num_frames: int = 16,
                 max_frames: int | None = 128, batch_size: int = 4, num_workers: int | Literal["auto"] = "auto",
                 limit: int | None = None,
                 question_tokenizer: str | None = None, max_question_length: int = 64, video_token: str = VIDEO_TOKEN,
                 blind: bool = False, allow_outside_root: bool = False, max_unreadable_fraction: float = 0.02,
                 decoder: Literal["decord", "torchcodec"] = "decord"):
        super().__init__()
        if not 0 <= max_unreadable_fraction <= 1:
            raise ValueError(f"--data.max_unreadable_fraction must lie in [0, 1], got {max_unreadable_fraction}")
        self.save_hyperparameters(ignore=["benchmark"])
        worker_count(num_workers)  # a bad value fails here, naming the flag
        self.benchmark = benchmark
        self.name = benchmark.name
        self.items: list[EvalItem] = []

    def setup(self, stage: str | None = None) -> None:
        h, benchmark = self.hparams, self.benchmark
        self._loaded = None  # tokenizers, transform and sampling from the settings as they are now
        if h.mode == "likelihood" and not isinstance(benchmark, MultipleChoiceBenchmark):
            raise ValueError(f"{benchmark.name} is open-ended: --data.mode=likelihood needs options; use generate")
        self.items = limit_groups(benchmark.read(), h.limit)
        if not self.items:
            raise ValueError(f"no items read from {benchmark.root} ({benchmark.name}); check --data.benchmark.root")
        if isinstance(benchmark, MultipleChoiceBenchmark):
            benchmark.check_items(self.items)
        self.test_set = self.reader(self.items)
        if refused := self.test_set.refusals:
            self._report_refusals(refused)
        if not h.blind:
            self._check_videos_exist()
        self.collator = self.collate()
        self.evaluator = Evaluator(benchmark, self.items, h.mode, h.max_unreadable_fraction)
        if getattr(self, "trainer", None) is not None:  # the trainer starts here: its threads leave the workers cores
            share_cores(h.num_workers, self.trainer)

    def _parts(self) -> tuple:
        """The tokenizer, question tokenizer, frame transform and frame sampling the settings name, loaded once."""
        if getattr(self, "_loaded", None) is None:
            from datamodules.loading import load_tokenizer

            h = self.hparams
            self.tokenizer = load_tokenizer(h.tokenizer, h.video_token)
            qtok = load_tokenizer(h.question_tokenizer, None) if h.question_tokenizer else None
            transform = FrameTransform(h.transform, h.vision_tower, normalize=False)  # uint8 to the device
            self._loaded = (self.tokenizer, qtok, transform, FrameSampling(h.frame_mode, h.fps, h.num_frames,
                                                                             h.max_frames))
        return self._loaded

    def reader(self, items: list[EvalItem], benchmark=None, mode: str | None = None,
               allow_outside_root: bool | None = None) -> BenchmarkDataset:
        """``items`` read with this module's settings (frames, prompts, question ids; ``benchmark``'s prompts, by
        default this module's; ``mode`` and ``allow_outside_root`` by default its settings'): the test set, and what
        :mod:`lit_bvllm.lmms_eval_model` reads lmms-eval's requests with."""
        h = self.hparams
        tok, qtok, transform, sampling = self._parts()
        return BenchmarkDataset(items, benchmark or self.benchmark, tok, transform, mode or h.mode, sampling,
                                question_tokenizer=qtok, max_question_length=h.max_question_length,
                                video_token=h.video_token, blind=h.blind,
                                allow_outside_root=h.allow_outside_root if allow_outside_root is None
                                else allow_outside_root, decoder=h.decoder)

    def collate(self, mode: str | None = None) -> BenchmarkCollator:
        """The collator of :meth:`reader`'s samples in ``mode`` (default: the settings')."""
        tok, qtok, transform, _ = self._parts()
        return BenchmarkCollator(tok.pad_token_id, transform.image_size, mode or self.hparams.mode,
                                 None if qtok is None else qtok.pad_token_id)

    def _report_refusals(self, refused: dict[int, str]) -> None:
        """One warning for the items whose media lie outside the benchmark's folders (they stay, as error items);
        a ValueError when that is every item, since such a run could only score 0."""
        first = next(iter(refused))
        what = (f"{len(refused)} of {len(self.items)} {self.name} items are not read, their media lying outside the "
                f"benchmark's folders (first: item {self.items[first].id!r}, {refused[first]})")
        if len(refused) == len(self.items):
            raise ValueError(f"{what}. Check --data.benchmark.root")
        log.warning("%s. They count as errors (error_ids in the results)", what)

    def _check_videos_exist(self) -> None:
        """Stop before the model loads when more than ``max_unreadable_fraction`` of the videos are not on disk
        (:func:`unreadable_report` says where it looked); warn when some are."""
        videos = sorted({it.video for it in self.items})
        missing = [v for v in videos if not os.path.exists(v)]
        if not missing:
            return
        report = unreadable_report(self.benchmark, len(videos), missing, "missing",
                                   self.hparams.max_unreadable_fraction)
        if len(missing) > self.hparams.max_unreadable_fraction * len(videos):
            raise FileNotFoundError(report)
        log.warning("%s. Their items count as wrong (error_ids in the results)", report.split(". Set")[0])

    def test_dataloader(self) -> DataLoader:
        return self._loader(Requests(self.test_set) if self.hparams.mode == "likelihood" else self.test_set)

    def predict_dataloader(self) -> DataLoader:  # one generated answer per item
        return self._loader(self.test_set)

    def _loader(self, data: Dataset) -> DataLoader:
        """``data`` sharded over the trainer's ranks (:class:`ShardSampler`), in batches."""
        h = self.hparams
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return DataLoader(data, batch_size=h.batch_size, sampler=ShardSampler(len(data), rank, world),
                          num_workers=worker_count(h.num_workers, processes_on_node(trainer)), collate_fn=self.collator)


def limit_groups(items: list[EvalItem], limit: int | None) -> list[EvalItem]:
    """The first ``limit`` items and every other item of their groups, in file order (all items for None)."""
    if limit is None or limit >= len(items):
        return items
    groups = {it.group for it in items[:limit]}
    return [it for it in items if it.group in groups]

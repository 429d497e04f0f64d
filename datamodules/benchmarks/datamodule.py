"""Zero-shot evaluation data: one LightningDataModule per benchmark, over the benchmark's own annotation files.

Every benchmark reader (:mod:`datamodules.benchmarks.readers`) turns its official format into
:class:`~datamodules.benchmarks.items.EvalItem` s; this module turns items into batches for ``lit_bvllm test``:

- ``mode="generate"`` (the papers' protocol): the benchmark's reference prompt (:mod:`datamodules.benchmarks.prompts`)
  in the chat template, ending with the assistant header; the model answers greedily and the answer is parsed;
- ``mode="likelihood"`` (multiple choice only, lmms-eval's ``mcppl``): the question alone as the prompt and one
  continuation per option, scored by mean token log-likelihood, so no answer can go unparsed.

A batch holds the frame fields of :class:`~datamodules.video_instruct.VideoInstructCollator` (prompts left-padded
for batched generation), plus ``index`` (each item's position in the benchmark, for the metric states),
``mode`` and, in likelihood mode, the option continuations of
``option_ids`` / ``option_mask`` / ``option_labels`` ``(sum_b K_b, L)`` (prompt + option k, right-padded, labels
-100 except on the option's tokens), and ``num_options`` ``(B,)``.

Multi-process evaluation shards the items without padding (rank ``r`` of ``W`` gets items ``r, r + W, ...``), so
no item is scored twice and none is lost; the model gathers the shards (``VideoLLM.on_test_epoch_end``).
"""

from __future__ import annotations

import logging
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.benchmarks.items import EvalItem
from datamodules.conversation import IGNORE_INDEX
from datamodules.errors import SampleError
from datamodules.transforms import FrameTransform
from datamodules.video import no_frames, read_video
from datamodules.video_instruct import VideoInstructCollator

log = logging.getLogger("lit_bvllm.data")


class BenchmarkDataset(Dataset):
    """Items -> frames, the prompt, question ids for text-conditioned reducers and, in likelihood mode, options.

    Args:
        items: the benchmark's items.
        benchmark: prompt family (a key of :data:`datamodules.benchmarks.prompts.BUILDERS`).
        tokenizer: the LLM's tokenizer (with the chat template).
        transform: frames -> tower input.
        mode: ``generate`` or ``likelihood``.
        frame_mode, fps, num_frames, max_frames: frame sampling (:func:`datamodules.video.sample_times`).
        subtitles: put the subtitle lines active at the sampled frames into the prompt (Video-MME).
        short_answer: open-ended: ask for a single word or phrase (lmms-eval's post-prompt).
        question_tokenizer: tokenizer of the reducer's question input (default: ``tokenizer``).
        max_question_length: question tokens kept.
        video_token: placeholder token.
        blind: give the model no frames (the language-prior baseline).
    """

    def __init__(self, items: list[EvalItem], benchmark: str, tokenizer, transform: FrameTransform,
                 mode: Literal["generate", "likelihood"] = "generate", frame_mode: str = "fps", fps: float = 1.0,
                 num_frames: int = 16, max_frames: int | None = 128, subtitles: bool = False,
                 short_answer: bool = False, question_tokenizer=None, max_question_length: int = 64,
                 video_token: str = "<video>", blind: bool = False):
        self.items, self.benchmark, self.tokenizer, self.transform, self.mode = items, benchmark, tokenizer, transform, mode
        self.frame_mode, self.fps, self.num_frames, self.max_frames = frame_mode, fps, num_frames, max_frames
        self.subtitles, self.short_answer, self.blind = subtitles, short_answer, blind
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
            frames, times, _ = read_video(item.video, self.frame_mode, self.fps, self.num_frames, self.max_frames,
                                          item.start, item.end, frame_fps=item.frame_fps)
            out = self.transform(frames), torch.as_tensor(times, dtype=torch.float32), None
        except SampleError as err:  # reported per id in the results; the run goes on
            log.warning("item %s: %s", item.id, err)
            out = self.transform(no_frames()), torch.zeros(0), f"{err.reason}: {err.detail}"
        self._last = (key, out)
        return out

    def prompt(self, item: EvalItem, times) -> str:
        """The user turn after the placeholder: the reference prompt, or the bare question in likelihood mode."""
        from datamodules.benchmarks.prompts import SUBTITLES, build_prompt

        subs = None
        if self.subtitles and item.subtitles:
            from datamodules.benchmarks.subtitles import read_srt, subtitles_at

            subs = subtitles_at(read_srt(item.subtitles), times.tolist())
        if self.mode == "likelihood":
            return item.question if not subs else SUBTITLES.format(subtitles="\n".join(subs)) + item.question
        return build_prompt(self.benchmark, item, subtitles=subs, short_answer=self.short_answer)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        frames, times, error = self.frames(item)
        tok = self.tokenizer
        text = self.prompt(item, times)
        chat = tok.apply_chat_template([{"role": "user", "content": f"{self.video_token}\n{text}"}],
                                       tokenize=False, add_generation_prompt=True)
        ids = tok(chat, add_special_tokens=False)["input_ids"]
        q = self.question_tokenizer(item.question, add_special_tokens=True, truncation=True,
                                    max_length=self.max_question_length)["input_ids"]
        sample = {
            "frames": frames,
            "frame_times": times,
            "input_ids": torch.tensor(ids),
            "labels": torch.full((len(ids),), IGNORE_INDEX),
            "question_ids": torch.tensor(q),
            "index": i,
            "meta": {"id": item.id, "error": error, "prompt": text},
        }
        if self.mode == "likelihood":
            options = [tok(o + tok.eos_token, add_special_tokens=False)["input_ids"] for o in item.options]
            sample["options"] = [(torch.tensor(ids + o), torch.tensor([IGNORE_INDEX] * len(ids) + o)) for o in options]
        return sample


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
        self.mode = mode

    def __call__(self, samples: list[dict]) -> dict:
        batch = self.inner(samples)
        batch["index"] = torch.tensor([s["index"] for s in samples])
        batch["mode"] = self.mode
        return batch


class ShardSampler(torch.utils.data.Sampler):
    """Rank ``r`` of ``W`` takes items ``r, r + W, ...``: every item exactly once over all ranks, no padding."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class BenchmarkDataModule(L.LightningDataModule):
    """A benchmark's items, prompts and answer scoring for ``lit_bvllm test``.

    The benchmark-specific modules below (``MVBenchDataModule``, ...) set ``benchmark`` and the reader's options;
    every other argument is shared:

    Args:
        root: the benchmark's folder (annotation files and videos, laid out as the benchmark ships them).
        tokenizer: local folder of the LLM's tokenizer.
        benchmark: reader and prompt family: ``mvbench``, ``videomme``, ``egoschema``, ``perception_test``,
            ``nextqa``, ``vnbench``, ``msvd_qa``, ``msrvtt_qa``, ``activitynet_qa``.
        reader_args: keyword arguments of the benchmark's reader.
        mode: ``generate`` (reference prompt, greedy answer, parsed letter) or ``likelihood`` (option scores;
            multiple choice only).
        vision_tower: local folder of the vision tower (its image processor).
        transform: ``processor`` or ``plain``, as in training.
        frame_mode: ``fps`` (B-VLLM evaluates at 1 fps) or ``uniform``.
        fps: frames per second in ``fps`` mode.
        num_frames: frames in ``uniform`` mode.
        max_frames: cap in ``fps`` mode (uniform thinning over the whole video).
        subtitles: Video-MME with subtitles: the lines active at the sampled frames go into the prompt.
        short_answer: open-ended: append "Answer the question using a single word or phrase." (lmms-eval).
        parse_rule: answer parser (:func:`datamodules.benchmarks.parsing.parse_choice`); default: the benchmark's
            reference rule.
        fallback_letter: letter given to an unparsed answer (the reference scripts use "C"); None: it counts wrong.
        judge_url: open-ended: an OpenAI-compatible endpoint (``http://host:port/v1``) for the Video-ChatGPT judge.
        judge_model: the judge's model name.
        judge_key_env: environment variable holding the judge's API key (unset: no key sent).
        judge_retries: tries per item before it counts as a judge failure.
        judge_cache: JSONL file of verdicts (default: ``judge_cache.jsonl`` in the run dir); cached items are not re-asked.
        batch_size: items per batch.
        num_workers: DataLoader workers.
        limit: evaluate only the first ``limit`` items (quick checks).
        question_tokenizer: tokenizer folder for a text-conditioned reducer's question (default: the LLM's).
        max_question_length: question tokens kept.
        video_token: placeholder token.
        blind: give the model no frames (the language-prior baseline a score should beat).
    """

    name = "benchmark"

    def __init__(self, root: str, tokenizer: str, benchmark: str = "vnbench", reader_args: dict | None = None,
                 mode: Literal["generate", "likelihood"] = "generate", vision_tower: str | None = None,
                 transform: Literal["processor", "plain"] = "processor", frame_mode: Literal["fps", "uniform"] = "fps",
                 fps: float = 1.0, num_frames: int = 16, max_frames: int | None = 128, subtitles: bool = False,
                 short_answer: bool = False, parse_rule: str | None = None, fallback_letter: str | None = None,
                 judge_url: str | None = None, judge_model: str = "gpt-3.5-turbo",
                 judge_key_env: str | None = "OPENAI_API_KEY", judge_retries: int = 3, judge_cache: str | None = None, batch_size: int = 4,
                 num_workers: int = 1, limit: int | None = None, question_tokenizer: str | None = None,
                 max_question_length: int = 64, video_token: str = "<video>", blind: bool = False):
        super().__init__()
        # the benchmark modules below pass their own arguments on: save this signature's values, not theirs
        self.save_hyperparameters({k: v for k, v in locals().items() if k not in ("self", "__class__")})
        self.name = benchmark
        self.items: list[EvalItem] = []

    def setup(self, stage: str | None = None) -> None:
        from datamodules.benchmarks.evaluator import Evaluator
        from datamodules.benchmarks.readers import READERS
        from datamodules.loading import load_tokenizer

        h = self.hparams
        if h.benchmark not in READERS:
            raise ValueError(f"--data.benchmark '{h.benchmark}' is not one of {sorted(READERS)}")
        self.items = READERS[h.benchmark](h.root, **(h.reader_args or {}))[: h.limit]
        if not self.items:
            raise ValueError(f"no items read from {h.root} (benchmark {h.benchmark}); check --data.root")
        open_ended = not self.items[0].multiple_choice
        if open_ended and h.mode == "likelihood":
            raise ValueError(f"{h.benchmark} is open-ended: --data.mode=likelihood needs options; use generate")
        self.tokenizer = load_tokenizer(h.tokenizer, h.video_token)
        qtok = load_tokenizer(h.question_tokenizer, None) if h.question_tokenizer else None
        transform = FrameTransform(h.transform, h.vision_tower)
        self.test_set = BenchmarkDataset(self.items, h.benchmark, self.tokenizer, transform, h.mode, h.frame_mode, h.fps,
                                         h.num_frames, h.max_frames, h.subtitles, h.short_answer, qtok,
                                         h.max_question_length, h.video_token, h.blind)
        qpad = None if qtok is None else qtok.pad_token_id
        self.collator = BenchmarkCollator(self.tokenizer.pad_token_id, transform.image_size, h.mode, qpad)
        judge = None
        if h.judge_url and open_ended:
            judge = {"url": h.judge_url, "model": h.judge_model, "api_key_env": h.judge_key_env,
                     "max_retries": h.judge_retries, "cache": h.judge_cache}
        self.evaluator = Evaluator(h.benchmark, self.items, h.mode, h.parse_rule, h.fallback_letter, judge,
                                   subtitles=h.subtitles, short_answer=h.short_answer)

    def test_dataloader(self) -> DataLoader:
        h = self.hparams
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return DataLoader(self.test_set, batch_size=h.batch_size, sampler=ShardSampler(len(self.test_set), rank, world),
                          num_workers=h.num_workers, collate_fn=self.collator)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


class MVBenchDataModule(BenchmarkDataModule):
    """MVBench (20 tasks; start/end windows; one task reads frame folders). ``tasks``: a subset of task names."""

    def __init__(self, root: str, tokenizer: str, tasks: list[str] | None = None, video_root: str | None = None, **kwargs):
        super().__init__(root, tokenizer, benchmark="mvbench", reader_args={"tasks": tasks, "video_root": video_root},
                         **kwargs)


class VideoMMEDataModule(BenchmarkDataModule):
    """Video-MME (short / medium / long), with ``subtitles=True`` for the subtitle variant."""

    def __init__(self, root: str, tokenizer: str, annotation: str = "videomme/test-00000-of-00001.parquet", **kwargs):
        super().__init__(root, tokenizer, benchmark="videomme", reader_args={"annotation": annotation}, **kwargs)


class EgoSchemaDataModule(BenchmarkDataModule):
    """EgoSchema: ``subset=True`` scores the 500 answered questions; ``False`` answers all and writes the submission."""

    def __init__(self, root: str, tokenizer: str, subset: bool = True, **kwargs):
        super().__init__(root, tokenizer, benchmark="egoschema", reader_args={"subset": subset}, **kwargs)


class PerceptionTestDataModule(BenchmarkDataModule):
    """Perception Test multiple choice: the val file scores locally; the test file writes the submission."""

    def __init__(self, root: str, tokenizer: str, annotation: str = "mc_question_valid.json", **kwargs):
        super().__init__(root, tokenizer, benchmark="perception_test", reader_args={"annotation": annotation}, **kwargs)


class NExTQADataModule(BenchmarkDataModule):
    """NExT-QA multiple choice (5-way)."""

    def __init__(self, root: str, tokenizer: str, annotation: str = "MC/test.csv", **kwargs):
        super().__init__(root, tokenizer, benchmark="nextqa", reader_args={"annotation": annotation}, **kwargs)


class VNBenchDataModule(BenchmarkDataModule):
    """VNBench (and the synthetic needle set): 4-way circular scoring."""

    def __init__(self, root: str, tokenizer: str, annotation: str = "VNBench_qa.json", **kwargs):
        super().__init__(root, tokenizer, benchmark="vnbench", reader_args={"annotation": annotation}, **kwargs)


class MSVDQADataModule(BenchmarkDataModule):
    """MSVD-QA (open-ended)."""

    def __init__(self, root: str, tokenizer: str, **kwargs):
        super().__init__(root, tokenizer, benchmark="msvd_qa", **kwargs)


class MSRVTTQADataModule(BenchmarkDataModule):
    """MSRVTT-QA (open-ended)."""

    def __init__(self, root: str, tokenizer: str, **kwargs):
        super().__init__(root, tokenizer, benchmark="msrvtt_qa", **kwargs)


class ActivityNetQADataModule(BenchmarkDataModule):
    """ActivityNet-QA (open-ended; Video-ChatGPT's question/answer pair files)."""

    def __init__(self, root: str, tokenizer: str, **kwargs):
        super().__init__(root, tokenizer, benchmark="activitynet_qa", **kwargs)

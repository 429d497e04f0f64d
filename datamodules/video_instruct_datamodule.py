"""``VideoInstructDataModule``: the training data of both stages (LightningDataModule around the dataset)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from datamodules.annotations import load_sources
from datamodules.conversation import VIDEO_TOKEN
from datamodules.isolation import DECODE_TIMEOUT_S
from datamodules.loading import processes_on_node, share_cores, worker_count
from datamodules.sampler import ResumableSampler
from datamodules.transforms import FrameTransform
from datamodules.video import FrameSampling
from datamodules.video_instruct import VideoInstructCollator, VideoInstructDataset, load_blocklist

log = logging.getLogger("lit_bvllm.data")


class VideoInstructDataModule(L.LightningDataModule):
    """Video/image/text instruction data in the LLaVA schema (VideoLLaMA2, Valley and LLaMA-VID files).

    Args:
        train: annotation file(s) (``.json`` list or ``.jsonl``) or a mixture YAML
            (``datasets: [{path, root, weight}]``).
        tokenizer: local folder of the LLM's tokenizer (the LLM checkpoint folder).
        val: validation annotation file(s) or mixture; none by default.
        vision_tower: local folder of the vision tower; its image processor sets frame size, mean and std.
        transform: ``processor`` (the tower's HF image processor) or ``plain`` (batched torch resize + normalise).
        image_size: frame side when no vision tower is given.
        resize_mode: ``crop``, ``pad`` or ``squash``, for ``transform=plain``; None: the vision tower's own policy.
        template: ``chat`` (the tokenizer's chat template, finetuning) or ``plain`` (placeholder + caption,
            pretraining).
        frame_mode: ``fps`` (``fps`` frames per second, mid-interval) or ``uniform`` (``num_frames`` frames).
        fps: frames per second in ``fps`` mode.
        num_frames: frames per video in ``uniform`` mode.
        max_frames: cap in ``fps`` mode; longer videos are thinned uniformly.
        max_length: longest LLM sequence after visual tokens are spliced in.
        visual_tokens: the reducer's budget θ: most visual tokens one sample can get (reserved out of max_length).
            ``lit_bvllm`` sets it from ``--model.reducer`` (:func:`lit_bvllm.cli.commands.link_visual_tokens`);
            built by hand, the data module needs it.
        question_tokenizer: local folder of the tokenizer for the question fed to text-conditioned reducers
            (e.g. BERT's for an InstructBLIP Q-Former); default: the LLM's.
        max_question_length: question tokens kept.
        batch_size: samples per batch and device.
        num_workers: DataLoader worker processes; ``auto``: the cores this process may use, shared among the node's
            training processes, less one each, at most 8 (:func:`~datamodules.loading.worker_count`).
        strict: raise on the first bad entry (naming file, entry and field) instead of skipping and counting it.
        max_bad_fraction: the run stops when more than this share of the entries read are bad (judged per
            data-loading process, over at least 100 entries). 0.5: sets built from web videos routinely miss a
            tenth to a quarter of their files, which a run should train around (skipped and counted); a majority
            of bad entries means a wrong root or a broken file, for ``lit_bvllm scan`` to explain.
        max_retries: no longer used (ignored with a warning): a bad entry is replaced by an entry not yet known to
            be bad, as often as needed, and ``max_bad_fraction`` decides when the run stops. Kept so that saved
            configs (``max_retries: 3``) replay.
        blocklist: a ``lit_bvllm scan`` report; its bad entries are left out.
        seed: seed of the mixture subsampling, the shuffling and the replacement choice.
        video_token: placeholder token marking where visual tokens go.
        allow_outside_root: read media whose paths (a ``..`` past the data root, an absolute path elsewhere) lead
            out of it; False: such an entry is a ``path_escape`` bad entry. Symlinks inside the root are followed.
        media_root: the folder media paths resolve against, for annotations kept apart from their media (LLaVA's
            ``--video_folder``); None: each annotation file's own folder (or its mixture entry's ``root:``).
        pin_memory: pin batches in page-locked memory (for GPU training).
        decoder: ``decord`` or ``torchcodec``: the video decoder (the same frames; torchcodec measured faster,
            ``benchmarks/RESULTS.md``).
        isolate_decoder: decode each video in a child process, so that a file that aborts or hangs the decoder is
            a skipped ``crashed`` entry instead of the end of the run (:mod:`datamodules.isolation`).
        decode_timeout: seconds one video's decoding may take in that child before it counts as ``crashed``.
        streaming: a folder (or object-store URL) of frame shards written by ``lit_bvllm shard`` from this config:
            the samples are streamed from it through litdata instead of decoded from the media
            (:mod:`datamodules.shards`); the data settings must be the ones the shards were made with.
        stream_cache: where litdata keeps the chunks it downloads from an object store (default: its own cache).
    """

    def __init__(
        self,
        train: str | list[str],
        tokenizer: str,
        val: str | list[str] | None = None,
        vision_tower: str | None = None,
        transform: Literal["processor", "plain"] = "processor",
        image_size: int = 224,
        resize_mode: Literal["crop", "pad", "squash"] | None = None,
        template: Literal["chat", "plain"] = "chat",
        frame_mode: Literal["fps", "uniform"] = "fps",
        fps: float = 1.0,
        num_frames: int = 16,
        max_frames: int | None = 128,
        max_length: int = 2048,
        visual_tokens: int | None = None,
        question_tokenizer: str | None = None,
        max_question_length: int = 64,
        batch_size: int = 2,
        num_workers: int | Literal["auto"] = "auto",
        strict: bool = False,
        max_bad_fraction: float = 0.5,
        max_retries: int | None = None,
        blocklist: str | None = None,
        seed: int = 0,
        video_token: str = VIDEO_TOKEN,
        pin_memory: bool = False,
        allow_outside_root: bool = False,
        media_root: str | None = None,
        decoder: Literal["decord", "torchcodec"] = "decord",
        isolate_decoder: bool = True,
        decode_timeout: float = DECODE_TIMEOUT_S,
        streaming: str | None = None,
        stream_cache: str | None = None,
    ):
        super().__init__()
        if not 0 < max_bad_fraction <= 1:
            raise ValueError(f"--data.max_bad_fraction must be in (0, 1], got {max_bad_fraction}")
        if max_retries is not None:
            log.warning("--data.max_retries=%s is ignored: bad entries are replaced by entries not known to be bad, "
                        "and --data.max_bad_fraction (%s) decides when the run stops", max_retries, max_bad_fraction)
        self.save_hyperparameters()
        worker_count(num_workers)  # a bad value fails here, naming the flag
        if visual_tokens is None or visual_tokens < 0:
            raise ValueError(f"visual_tokens must be the reducer's budget θ (>= 0), got {visual_tokens}: "
                             "lit_bvllm sets it from --model.reducer; a data module built by hand needs it")
        self.tokenizer = None
        self.train_set: VideoInstructDataset | None = None
        self.val_set: VideoInstructDataset | None = None

    @property
    def sampling(self) -> FrameSampling:
        """The frames decoded per video, from ``--data.frame_mode``, ``fps``, ``num_frames`` and ``max_frames``."""
        h = self.hparams
        return FrameSampling(h.frame_mode, h.fps, h.num_frames, h.max_frames)

    def _sources(self, spec: str | list[str]) -> list:
        sources = load_sources(spec)
        if self.hparams.media_root is None:
            return sources
        root = Path(self.hparams.media_root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"--data.media_root '{self.hparams.media_root}' is not a folder")
        return [dataclasses.replace(s, root=str(root)) for s in sources]

    def _dataset(self, spec: str | list[str]) -> VideoInstructDataset:
        h = self.hparams
        return VideoInstructDataset(
            self._sources(spec), self.tokenizer, self.transform, template=h.template, sampling=self.sampling,
            max_length=h.max_length, visual_tokens=h.visual_tokens, question_tokenizer=self.question_tokenizer,
            max_question_length=h.max_question_length, strict=h.strict, max_bad_fraction=h.max_bad_fraction,
            blocklist=load_blocklist(h.blocklist), seed=h.seed, video_token=h.video_token,
            allow_outside_root=h.allow_outside_root, decoder=h.decoder, isolate_decoder=h.isolate_decoder,
            decode_timeout=h.decode_timeout,
        )

    def setup(self, stage: str | None = None) -> None:
        from datamodules.loading import load_tokenizer

        h = self.hparams
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(h.tokenizer, h.video_token)
            self.question_tokenizer = (
                load_tokenizer(h.question_tokenizer, None, "--data.question_tokenizer")
                if h.question_tokenizer else None
            )
            self.transform = FrameTransform(h.transform, h.vision_tower, h.image_size, resize_mode=h.resize_mode,
                                            normalize=False)  # uint8 to the device, normalised there
            q_pad = self.question_tokenizer.pad_token_id if self.question_tokenizer is not None else None
            self.collator = VideoInstructCollator(self.tokenizer.pad_token_id, self.transform.image_size,
                                                  question_pad_id=q_pad)
        if h.streaming:
            self._setup_streaming(stage)
        else:
            if stage in (None, "fit") and self.train_set is None:
                self.train_set = self._dataset(h.train)
            if stage in (None, "fit", "validate") and h.val is not None and self.val_set is None:
                self.val_set = self._dataset(h.val)
        if self.trainer is not None:  # the trainer starts in this process: its threads leave the workers their cores
            share_cores(h.num_workers, self.trainer)

    def _setup_streaming(self, stage: str | None) -> None:
        """The train (and val) samples from the shard folder ``--data.streaming``, checked against this config."""
        from datamodules.shards import check_settings, read_manifest, shard_stream

        h = self.hparams
        manifest = read_manifest(h.streaming)
        check_settings(manifest, h, h.streaming)
        for split, spec in (("train", h.train), ("val", h.val)):
            if spec is None:
                continue
            ours = [str(Path(s.path).resolve()) for s in self._sources(spec)]
            theirs = manifest["sources"].get(split)
            if ours != theirs:
                raise ValueError(f"--data.streaming '{h.streaming}' holds the {split} set {theirs}, this config's "
                                 f"--data.{split} is {ours}: write the shards from this config (`lit_bvllm shard`)")
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = shard_stream(h.streaming, manifest, "train", True, h.seed, h.stream_cache)
        if stage in (None, "fit", "validate") and h.val is not None and self.val_set is None:
            self.val_set = shard_stream(h.streaming, manifest, "val", False, h.seed, h.stream_cache)

    def _stream_loader(self, dataset, workers: int):
        from litdata import StreamingDataLoader

        from datamodules.shards import ReplaceTombstones

        h = self.hparams
        return StreamingDataLoader(dataset, batch_size=h.batch_size, num_workers=workers,
                                   collate_fn=ReplaceTombstones(self.collator), pin_memory=h.pin_memory)

    def _loader(self, dataset: VideoInstructDataset, shuffle: bool) -> DataLoader:
        h = self.hparams
        trainer = self.trainer
        if h.streaming:  # litdata shards over ranks and workers, and keeps its position (Lightning checkpoints it)
            return self._stream_loader(dataset, worker_count(h.num_workers, processes_on_node(trainer)))
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = ResumableSampler(len(dataset), shuffle, h.seed, rank, world)
        if shuffle:
            self.train_sampler = sampler
            if self._resume is not None:
                sampler.resume(*self._resume)
                self._resume = None
        workers = worker_count(h.num_workers, processes_on_node(trainer))
        return DataLoader(
            dataset,
            batch_size=h.batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=self.collator,
            pin_memory=h.pin_memory,
            persistent_workers=workers > 0,
            # the validation loader seeds its workers from a generator of its own: a loader draws its seed from the
            # global RNG otherwise, and a validation set would change the training run it watches
            generator=None if shuffle else torch.Generator().manual_seed(h.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []

    # Data position in checkpoints: how far into its epoch the training data was (per rank: all ranks move in step).
    _resume: tuple[int, int] | None = None

    def state_dict(self) -> dict:
        trainer = self.trainer
        if trainer is None or getattr(self, "train_sampler", None) is None:
            return {}
        # batches of this epoch processed so far (checkpoints are written after a batch); Lightning restores this
        # counter on resume and keeps counting, so it is the position in the epoch however often the run resumed
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": trainer.current_epoch, "samples": batches * self.hparams.batch_size}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            self._resume = (int(state_dict["epoch"]), int(state_dict["samples"]))

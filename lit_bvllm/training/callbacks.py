"""The suite's callbacks: what a run reports (``RunSummary``, ``PredictionWriter``, ``BenchmarkEvaluation``), what it
keeps across a resume (``RNGState``), its training recipe (``TemperatureSchedule``) and its config snapshot."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from datamodules.io import write_json


class RunSummary(L.Callback):
    """Parameter counts at fit start; frames and visual tokens per sample, before and after reduction, on the first
    training batch (as that step reduced it).

    Everything goes to stdout, to the logger as hyperparameters (``derived/...``) and to ``run_summary.json`` in the
    run directory.
    """

    def __init__(self):
        self.done = False

    def on_fit_start(self, trainer, pl_module) -> None:
        model = pl_module.model
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        self.stats = {"derived/params_trainable": trainable, "derived/params_frozen": total - trainable}
        per_module = {n: sum(p.numel() for p in m.parameters() if p.requires_grad) for n, m in model.named_children()}
        self.stats.update({f"derived/trainable_{n}": c for n, c in per_module.items() if c})

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.done or not outputs:  # a skipped step has no outputs
            return
        self.done = True
        frames = batch["frame_mask"].sum(1).float().cpu()
        model = pl_module.model
        r = model.reducer
        keep = r.frames_to_encode(batch["frame_mask"]).sum(1).float().cpu()
        n = getattr(model.vision, "num_patches", 0)
        after = outputs["num_tokens"].float().cpu()  # from the step itself: no extra pass (FSDP2 would refuse one)
        media = frames > 0
        mean = lambda x: float(x[media].mean()) if media.any() else 0.0  # noqa: E731
        self.stats.update({
            "derived/frames_per_sample": mean(frames),
            "derived/frames_encoded_per_sample": mean(keep),
            "derived/visual_tokens_before": mean(frames * n),
            "derived/visual_tokens_after": mean(after),
            "derived/visual_token_budget": int(r.budget),
            "derived/batch_size_per_device": int(batch["input_ids"].shape[0]),
            "derived/world_size": trainer.world_size,
        })
        if trainer.is_global_zero:
            shown = (f"{k.split('/')[1]}={v:,.1f}" if isinstance(v, float) else f"{k.split('/')[1]}={v:,}"
                     for k, v in self.stats.items())
            print("run summary: " + ", ".join(shown), flush=True)
        for logger in trainer.loggers:
            logger.log_hyperparams(self.stats)
        log_dir = trainer.log_dir  # broadcasts from rank 0: every rank must ask, or rank 0 waits for ever
        if trainer.is_global_zero and log_dir:
            write_json(Path(log_dir) / "run_summary.json", self.stats)


class PredictionWriter(L.pytorch.callbacks.BasePredictionWriter):
    """``lit_bvllm predict``: each rank appends its generations to ``predictions.rank<r>.jsonl`` in the run dir as
    batches finish (nothing is held in memory, and a crash keeps what was written)."""

    def __init__(self):
        super().__init__(write_interval="batch")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            for record in prediction:
                f.write(json.dumps(record) + "\n")

    def on_predict_start(self, trainer, pl_module) -> None:
        # trainer.log_dir broadcasts from rank 0: asked here, once, by every rank together; asked per batch, a rank
        # with more batches than another (uneven shards) would wait for ever for a broadcast nobody else makes
        self.path = Path(trainer.log_dir or ".") / f"predictions.rank{trainer.global_rank}.jsonl"
        self.path.unlink(missing_ok=True)  # a rerun into the same dir starts the file afresh


class TemperatureSchedule(L.Callback):
    """Anneal the reducer's Gumbel-softmax temperature τ during training, from ``start`` down to the reducer's own τ.

    B-VLLM samples frames with a hard straight-through Gumbel-softmax at τ = 0.1 (Eq. 1, §3.2). At that temperature
    the noisy softmax is one-hot from the first step, whatever the logits: its Jacobian, and so the gradient that
    reaches the frame-selection Q-Former, is ~0, and the selector stays as initialised (measured on the embedded
    default: benchmarks/RESULTS.md). Annealing τ from a warm start is the
    Gumbel-softmax's own recipe (Jang et al., ICLR 2017, §3.2 and §4): soft samples explore and carry gradient early,
    and training ends at the paper's τ, the value evaluation uses. τ is a function of the global step, so a resumed
    run anneals exactly as an uninterrupted one.

    Args:
        start: τ at step 0.
        anneal_ratio: share of the training steps over which τ decays (exponentially) to the reducer's τ.
    """

    def __init__(self, start: float = 1.0, anneal_ratio: float = 0.5):
        if start <= 0 or not 0 < anneal_ratio <= 1:
            raise ValueError(f"TemperatureSchedule needs start > 0 and 0 < anneal_ratio <= 1, got {start}, "
                             f"{anneal_ratio}")
        self.start, self.anneal_ratio = start, anneal_ratio
        self.target: float | None = None

    def tau(self, step: int, total: int) -> float:
        """τ at ``step`` of ``total``: ``start * (target / start) ** progress``, then the target."""
        progress = min(1.0, step / max(1.0, self.anneal_ratio * total))
        return self.start * (self.target / self.start) ** progress

    def on_fit_start(self, trainer, pl_module) -> None:
        # the configured τ (hparams), not a value left by a run
        self.target = getattr(pl_module.model.reducer, "tau", None)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.target is None:
            return
        pl_module.model.reducer.tau = self.tau(trainer.global_step, int(trainer.estimated_stepping_batches))
        pl_module.log("train/tau", pl_module.model.reducer.tau, batch_size=batch["input_ids"].shape[0])

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.target is not None:
            pl_module.model.reducer.tau = self.target


class KeepingConfigSnapshot(SaveConfigCallback):
    """LightningCLI's config snapshot (``config.yaml`` in the run directory) that never overwrites an earlier one.

    A run directory is named by ``--trainer.logger.init_args.version``; a resume (``fit --ckpt_path`` from inside the
    run dir; any other run into a dir that holds one is refused, see ``--overwrite``) finds the first run's snapshot
    there. It is kept as ``config.1.yaml`` (``config.2.yaml``, ...), with a warning,
    and the new run writes ``config.yaml``: the newest run's config is always ``config.yaml``, and no run's config is
    lost.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved or not self.save_to_log_dir:
            return super().setup(trainer, pl_module, stage)
        log_dir = trainer.log_dir  # broadcasts: every rank asks
        if trainer.is_global_zero and log_dir is not None:
            path = Path(log_dir) / self.config_filename
            if path.is_file():
                n = 1
                while (kept := path.with_name(f"{path.stem}.{n}{path.suffix}")).exists():
                    n += 1
                path.rename(kept)
                rank_zero_warn(f"{path} held an earlier run's config (same --trainer.logger.init_args.version); kept "
                               f"as {kept.name}, this run's is {path.name}")
        self.overwrite = True  # the old snapshot is out of the way on rank 0
        return super().setup(trainer, pl_module, stage)


class SelectionFigures(L.Callback):
    """TensorBoard figures of what the reducer selected (:mod:`lit_bvllm.analysis.selection`): for the first
    ``num_samples`` samples of the first validation batch (every validation run; the question, no answer) and of the
    first test batch (the question and the model's answer, needle spans marked where the benchmark has them), the
    sampled frames as a strip with the kept ones outlined (selection weight, merge group) and each kept frame's spatial
    attention. Tags ``selection/<stage>/<sample>``, at the global step.

    Args:
        num_samples: samples drawn per stage.
    """

    def __init__(self, num_samples: int = 2):
        self.num_samples = num_samples

    @staticmethod
    def _tensorboards(trainer) -> list:
        from lightning.pytorch.loggers import TensorBoardLogger

        return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    def _draw(self, trainer, stage: str, batch: dict, info: dict, answers: list[str | None], needles: list) -> None:
        from lit_bvllm.analysis.selection import sample_info, selection_figure

        loggers = self._tensorboards(trainer)
        if not loggers or not trainer.is_global_zero or "kept_frames" not in info:
            return
        import matplotlib.pyplot as plt

        for b in range(min(self.num_samples, len(batch["meta"]))):
            t = int(batch["frame_mask"][b].sum())
            if t == 0:
                continue
            meta = batch["meta"][b]
            question = meta.get("question") or meta.get("prompt") or ""
            right = meta.get("answer")
            fig = selection_figure(batch["frames"][b, :t].cpu(), batch["frame_times"][b, :t].cpu(),
                                   sample_info(info, b), question, answers[b], needles[b],
                                   options=meta.get("options") or None,
                                   correct=right if isinstance(right, int) and right >= 0 else None)
            for lg in loggers:
                lg.experiment.add_figure(f"selection/{stage}/{b}", fig, trainer.global_step, close=False)
            plt.close(fig)

    @staticmethod
    def _recorded_info(trainer, pl_module, batch) -> dict | None:
        """The reducer's info on ``batch`` from a pass of its own with the attention maps recorded (the model's own
        pass stays as it is: recording switches the Q-Former to eager attention, numerically not the same), under
        the run's precision; None under a sharding strategy, whose parameters are gathered only inside the
        wrapped model's own forward."""
        from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

        from lit_bvllm.analysis.selection import recording_attention

        if not trainer.is_global_zero or not isinstance(trainer.strategy, (SingleDeviceStrategy, DDPStrategy)):
            return None  # only the first process draws: the others need no second pass
        model = pl_module.model
        with torch.no_grad(), recording_attention(model.reducer), trainer.precision_plugin.forward_context():
            return model.visual_tokens(batch)[2]

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not self._tensorboards(trainer):
            return
        info = self._recorded_info(trainer, pl_module, batch)
        if info is not None:
            n = len(batch["meta"])
            self._draw(trainer, "val", batch, info, [None] * n, [None] * n)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx != 0 or not self._tensorboards(trainer):
            return
        info = self._recorded_info(trainer, pl_module, batch)
        if info is None:
            return
        answers = []
        for i, meta, out in zip(batch["index"].tolist(), batch["meta"], outputs["output"]):
            if i < 0:  # a rank's stand-in sample, no item's
                answers.append(None)
            elif isinstance(out, str):
                answers.append(out)
            elif meta["options"]:  # likelihood mode: the option of highest score
                k = int(out[: len(meta["options"])].argmax())
                answers.append(f"({chr(65 + k)}) {meta['options'][k]}")
            else:
                answers.append(None)
        needles = [meta["needle_times"] if i >= 0 else None for i, meta in zip(batch["index"].tolist(), batch["meta"])]
        self._draw(trainer, "test", batch, info, answers, needles)


class RNGState(L.Callback):
    """Carries the torch (and CUDA) RNG streams in the checkpoint, so a resumed run draws the Gumbel noise and dropout
    the uninterrupted one would. Restored at the first batch after the resume: starting a DataLoader draws from it."""

    def __init__(self):
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._pending is not None:
            torch.set_rng_state(self._pending["torch"])
            if self._pending["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self._pending["cuda"])
            self._pending = None


class BenchmarkEvaluation(L.Callback):
    """``lit_bvllm test``: scores each batch's answers with the benchmark's evaluator, syncs the metric states and
    gathers the per-item records across ranks (each item once), aggregates, logs ``test/<benchmark>/...`` and writes
    the run's files: ``<benchmark>_predictions.jsonl`` (first, so the answers are kept whatever follows),
    ``<benchmark>_results.json`` (with the protocol and the weights evaluated) and a submission file where the
    answers are hidden.

    The evaluator (:class:`datamodules.benchmarks.evaluator.Evaluator`: the benchmark, its items, how it scores and
    how many unreadable videos it allows) is the one the benchmark data module builds as it is set up, its
    ``evaluator``; the callback takes it once, at the start of the test. The aggregate is kept as ``self.results``
    (rank 0; ``{}`` elsewhere).
    """

    def __init__(self):
        self.results: dict = {}
        self.evaluator = None

    def on_test_start(self, trainer, pl_module) -> None:
        self.evaluator = getattr(trainer.datamodule, "evaluator", None)
        if self.evaluator is None:
            raise ValueError("`lit_bvllm test` needs a benchmark data module: compose experiments/eval/base.yaml and "
                             "experiments/eval/<benchmark>.yaml")

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._records: list[dict] = []
        self._scores = self.evaluator.new_metric().to(pl_module.device)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        records, update = self.evaluator.score(batch, outputs["output"], outputs["info"])
        self._scores.update(**update)
        self._records += records

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        ev, out = self.evaluator, Path(trainer.log_dir or ".")
        states = self._scores.compute()  # summed over ranks
        records = _gather(self._records)
        if trainer.is_global_zero:
            _write_predictions(out / f"{ev.name}_predictions.jsonl", records)
        videos = ev.videos(records)
        rank_zero_info(f"{ev.name}: {videos['unreadable_videos']} of {videos['videos']} videos missing or unreadable")
        if (problem := ev.unreadable(records)) is not None:  # every rank holds every record: all stop
            raise RuntimeError(f"{problem}. The answers are in {out / f'{ev.name}_predictions.jsonl'}; no results "
                               "were written")
        result = ev.aggregate(states, records, out) if trainer.is_global_zero else {}
        for key, value in _flatten(result).items():
            pl_module.log(f"test/{ev.name}/{key}", value, rank_zero_only=True)
        headline = next((result[k] for k in HEADLINES if isinstance(result.get(k), (int, float))), None)
        if headline is not None:  # TensorBoard's HPARAMS tab shows it (it showed -1)
            pl_module.log("hp_metric", float(headline), rank_zero_only=True)
        if trainer.is_global_zero:
            self._write_results(result, records, out, trainer, pl_module.hparams)
        self.results = result

    def _write_results(self, result: dict, records: list[dict], out: Path, trainer, hparams) -> None:
        """The submission file where the benchmark has one, then ``<benchmark>_results.json`` with the protocol
        and the weights evaluated."""
        ev = self.evaluator
        if (sub := ev.submission(records)) is not None:
            (out / sub[0]).write_text(sub[1])
            result["submission"] = sub[0]
        weights = {"ckpt_path": None if trainer.ckpt_path is None else str(trainer.ckpt_path),
                   "weights": hparams.get("weights"), "lora_adapter": hparams.get("lora_adapter")}
        path = write_json(out / f"{ev.name}_results.json",
                          {**result, "protocol": ev.describe(hparams.get("max_new_tokens")),
                           "evaluated_weights": weights})
        print(f"{ev.name} results: {path} (predictions: {out / f'{ev.name}_predictions.jsonl'})", flush=True)


HEADLINES = ("circular_accuracy", "accuracy", "mean_over_tasks", "judge_accuracy", "exact_match")
"""The metric a benchmark run is read by, first present first: it becomes the run's ``hp_metric``."""


def _gather(records: list[dict]) -> list[dict]:
    """Every rank's records, on every rank, in item order."""
    if dist.is_available() and dist.is_initialized():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, records)
        records = [r for part in gathered for r in part]
    return sorted(records, key=lambda r: r["index"])


def _write_predictions(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def _flatten(result: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a (nested) results dict as ``{"a/b": float}``, for logging."""
    flat = {}
    for k, v in result.items():
        k = k or "_empty"  # a tag never ends in "/" (an item without a domain, ...)
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[f"{prefix}{k}"] = float(v)
    return flat


class ProgressLog(L.Callback):
    """Plain progress lines for a log file: when stdout is not a terminal (a SLURM job's ``tail -f``, a redirected
    run), the progress bar writes nothing until the end, so every ``every_n_steps`` training steps (and test
    batches) one line says where the run is: ``fit step 120/1000 (12%) loss 0.512, 4.2 samples/s, 0:00:29 elapsed,
    ETA 0:03:33``. Silent on a terminal, where the bar shows the same. Rank 0 only.

    Args:
        every_n_steps: steps (test: batches) between two lines; None: a tenth of the run (at most 100, at least 1;
            100 when the run has no end).
        force: write the lines on a terminal too.
    """

    def __init__(self, every_n_steps: int | None = None, force: bool = False):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"ProgressLog: every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps, self.force = every_n_steps, force

    def _every(self, total: int | None) -> int:
        if self.every_n_steps is not None:
            return self.every_n_steps
        return max(1, min(100, total // 10)) if total else 100

    def _on(self, trainer) -> bool:
        return trainer.is_global_zero and (self.force or not sys.stdout.isatty())

    def _start(self) -> None:
        self._t0, self._samples, self._last = time.monotonic(), 0, None

    def on_train_start(self, trainer, pl_module) -> None:
        self._start()
        self._first_step = trainer.global_step  # a resumed run counts its own pace

    def on_test_start(self, trainer, pl_module) -> None:
        self._start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._samples += int(batch["input_ids"].shape[0]) * trainer.world_size
        step = trainer.global_step
        total = trainer.max_steps if trainer.max_steps > 0 else None
        if not self._on(trainer) or step % self._every(total) or step == self._last:
            return
        self._last = step
        loss = trainer.callback_metrics.get("train/loss")
        self._line("fit step", step, total, step - self._first_step,
                   [f"loss {float(loss):.4f}"] if loss is not None else [])

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._samples += int(batch["input_ids"].shape[0]) * trainer.world_size
        done = batch_idx + 1
        total = int(trainer.num_test_batches[dataloader_idx]) if trainer.num_test_batches else None
        if self._on(trainer) and (done % self._every(total) == 0 or done == total):
            self._line("test batch", done, total, done, [])

    def _line(self, what: str, at: int, total: int | None, done: int, extra: list[str]) -> None:
        elapsed = time.monotonic() - self._t0
        parts = [f"{what} {at}" + (f"/{total} ({100 * at / total:.0f}%)" if total else ""), *extra,
                 f"{self._samples / max(elapsed, 1e-9):.1f} samples/s", f"{_clock(elapsed)} elapsed"]
        if total and done > 0:
            parts.append(f"ETA {_clock(elapsed / done * (total - at))}")
        print(", ".join(parts), flush=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


try:
    from lightning.pytorch.callbacks import RichProgressBar
except ImportError:  # rich is optional in Lightning
    RichProgressBar = None

if RichProgressBar is not None:
    class ProgressBar(RichProgressBar):
        """Lightning's rich progress bar, whose epoch reads ``Epoch 3`` when the run is bounded by steps: the stock
        one printed ``Epoch 3/-2`` (max_epochs - 1, with max_epochs = -1)."""

        def _get_train_description(self, current_epoch: int) -> str:
            description = super()._get_train_description(current_epoch)
            if self.trainer.max_epochs is not None and self.trainer.max_epochs < 0:
                description = description.replace(f"/{self.trainer.max_epochs - 1}", "", 1)
            return description


class TrainingMetrics(L.Callback):
    """What a researcher reads a training run by, in the logger every ``log_every_n_steps``: the gradient norm
    before clipping (``train/grad_norm``, over the trainable parameters), the throughput since the last log
    (``train/samples_per_s``, ``train/tokens_per_s``: every process's samples, their attended tokens) and the peak
    memory (``train/peak_memory_gib``: CUDA's peak allocation on a GPU, the process's peak resident size on a CPU)."""

    def on_train_start(self, trainer, pl_module) -> None:
        self._since, self._samples, self._tokens = time.monotonic(), 0, 0

    def _due(self, trainer) -> bool:
        return (trainer.global_step + 1) % max(1, trainer.log_every_n_steps) == 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self._due(trainer):
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))
            pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False, batch_size=1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._samples += int(batch["input_ids"].shape[0]) * trainer.world_size
        self._tokens += int(batch["attention_mask"].sum()) * trainer.world_size
        if trainer.global_step % max(1, trainer.log_every_n_steps):
            return
        elapsed = max(time.monotonic() - self._since, 1e-9)
        pl_module.log_dict({"train/samples_per_s": self._samples / elapsed,
                            "train/tokens_per_s": self._tokens / elapsed,
                            "train/peak_memory_gib": _peak_memory_gib(pl_module.device)},
                           on_step=True, on_epoch=False, batch_size=1, rank_zero_only=True)
        self._since, self._samples, self._tokens = time.monotonic(), 0, 0


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

"""The ``lit_bvllm`` command's parser (:func:`lightning_cli`), its run directories and the commands that read a run
config (export, scan, preview, show-selection). Imported by :func:`lit_bvllm.cli.main` once the process is set up."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO

from datamodules import SkippedSamplesLogger, VideoInstructDataModule
from datamodules.benchmarks import BenchmarkDataModule
from datamodules.conversation import IGNORE_INDEX
from datamodules.scan import scan_dataset, write_report
from lit_bvllm.analysis.probe import probe_tower
from lit_bvllm.export import export as export_model
from lit_bvllm.reducers.qformer import QFORMER_TOKENIZER, pretrained_config
from lit_bvllm.study import study
from lit_bvllm.sweeps import sweep
from lit_bvllm.training.callbacks import (
    BenchmarkEvaluation,
    KeepingConfigSnapshot,
    PredictionWriter,
    ProgressLog,
    RNGState,
    RunSummary,
    SelectionFigures,
    TrainingMetrics,
)
from lit_bvllm.training.checkpointing import AtomicCheckpointIO
from lit_bvllm.training.consolidate import consolidate
from lit_bvllm.training.lit_module import VideoLLMModule
from lit_bvllm.weights import read_checkpoint
from lit_bvllm.world import make_synthetic
from lit_bvllm.world.tiny import make_tiny


def scan(data: VideoInstructDataModule, out: str = "scan_report.json", workers: int = 2, decode: bool = False,
         timeout: float = 300.0) -> None:
    """Validate every entry of the training (and validation) set and write a report usable as --data.blocklist.

    Args:
        data: the data section of a training config.
        out: report path (JSON).
        workers: parallel processes.
        decode: decode every sampled frame, not only headers (slower, catches mid-file corruption).
        timeout: seconds one entry's check may take before its worker is stopped and the entry reported crashed.
    """
    data.hparams.blocklist = None  # a scan looks at every entry
    data.setup("fit")
    report = scan_dataset([d for d in (data.train_set, data.val_set) if d is not None], workers, decode, timeout)
    path = write_report(report, out)
    print(f"scanned {report['entries']} entries in {report['seconds']} s: {report['ok']} ok, {report['bad']} bad "
          f"{report['counts']}; report: {path}" + (f" (use --data.blocklist={path})" if report["bad"] else ""))
    if hint := scan_hint(report):
        print(hint)


MOSTLY = {"path_escape": "the media paths lead out of the annotation's folder: if the media live elsewhere, set "
                         "--data.allow_outside_root true (or write the annotation beside its media) rather than "
                         "blocking them",
          "missing_file": "the media are not where the annotation's folder says: media paths are read relative to "
                          "the annotation file's folder (or the mixture YAML's root:); check --data.train"}
"""What a scan says when most entries fail for one reason: the setting to change, not a blocklist of the set."""


def scan_hint(report: dict) -> str | None:
    """A line naming the flag to change when more than half of the scanned entries fail for one reason."""
    counts = report.get("counts") or {}
    if not counts or not report.get("entries"):
        return None
    reason, n = max(counts.items(), key=lambda kv: kv[1])
    if n <= report["entries"] / 2 or reason not in MOSTLY:
        return None
    return f"{n} of {report['entries']} entries are {reason}: {MOSTLY[reason]}"


def preview(data: VideoInstructDataModule, num_samples: int = 4) -> None:
    """Decode one training batch and print it: shapes, frames and times, and the text with supervised spans in [[ ]].

    Args:
        data: the data section of a training config.
        num_samples: samples printed (the batch size is set to this).
    """
    data.hparams.batch_size, data.hparams.num_workers = num_samples, 0
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    tok = data.tokenizer
    source = (f"streamed from {data.hparams.streaming}" if data.hparams.get("streaming")
              else f"from {len(data.train_set.files)} file(s)")
    try:
        size = f"{len(data.train_set)} samples"
    except TypeError:  # a weighted mixture of shards: litdata draws until a source runs out
        size = "a weighted mixture"
    print(f"train set: {size} {source}")
    for k, v in batch.items():
        if hasattr(v, "shape"):
            print(f"  {k:<14} {tuple(v.shape)} {v.dtype}")
    for b, meta in enumerate(batch["meta"]):
        n = int(batch["frame_mask"][b].sum())
        times = ", ".join(f"{t:.1f}" for t in batch["frame_times"][b, :n].tolist()[:12]) + (" ..." if n > 12 else "")
        print(f"\n[{b}] id={meta['id']} media={meta['media']} frames={n} duration={meta['duration']:.1f}s "
              f"truncated={meta['truncated']} ({os.path.basename(meta['source'])}#{meta['index']})")
        if n:
            print(f"    frame times: {times}")
        print(f"    question: {meta['question']!r}")
        ids, labels = batch["input_ids"][b], batch["labels"][b]
        keep = batch["attention_mask"][b].bool()
        text, sup = [], False
        for i, l in zip(ids[keep].tolist(), labels[keep].tolist()):
            if (l != IGNORE_INDEX) != sup:
                text.append("[[" if not sup else "]]")
                sup = not sup
            text.append(tok.decode([i]))
        print("    " + "".join(text + (["]]"] if sup else [])).replace("\n", "\n    "))
    print(f"\nskipped entries in this batch: {len(batch['skipped'])}")


def evaluate(tasks: str, configs: str = "experiments/pretrain.yaml,experiments/finetune.yaml",
             ckpt_path: str | None = None, eval_dir: str = "experiments/eval", flags: str = "",
             overwrite: bool = False) -> dict:
    """Several benchmarks, one model load: each task's run as ``lit_bvllm test`` would write it, then a table.

    ``lit_bvllm evaluate --tasks mvbench,videomme --ckpt_path runs/finetune/tiny/checkpoints/last.ckpt``: the
    training configs, then ``<eval_dir>/base.yaml`` and ``<eval_dir>/<task>.yaml``, per task; the model (backbones,
    reducer) is built once and tested on every task, each in its own run directory with its results and predictions.

    Args:
        tasks: comma-separated benchmark configs under ``eval_dir`` (``mvbench``, ``videomme``, ``needle_64s``, ...).
        configs: comma-separated training configs, in the order ``fit`` read them.
        ckpt_path: the training checkpoint evaluated (its structure checked against the configs).
        eval_dir: the folder of the benchmark configs.
        flags: further settings for every task, space-separated ``key=value`` (``data.limit=8
            model.max_new_tokens=16``: each becomes ``--key=value``).
        overwrite: replace each task's run directory if it holds a run.
    """
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise ValueError("--tasks names no benchmark: give e.g. --tasks mvbench,videomme (configs under --eval_dir)")
    missing = [n for n in names if not (Path(eval_dir) / f"{n}.yaml").is_file()]
    if missing:
        raise FileNotFoundError(f"--tasks: no config {', '.join(f'{eval_dir}/{n}.yaml' for n in missing)}")
    base = [a for c in configs.split(",") if c.strip() for a in ("--config", c.strip())]
    saved = (read_checkpoint(ckpt_path, "--ckpt_path").get("hyper_parameters") or {}) if ckpt_path else None
    module, written = None, {}
    for name in names:
        extra = [f"--{f.removeprefix('--')}" for f in flags.split()]
        cli = lightning_cli([*base, "--config", f"{eval_dir}/base.yaml", "--config", f"{eval_dir}/{name}.yaml",
                             *extra], run=False, weights=ckpt_path or "")
        if saved is not None and (diffs := structure_differences(saved, cli.config.model, evaluating=True)):
            raise ValueError(f"--ckpt_path '{ckpt_path}' holds another model than these configs describe: "
                             + "; ".join(diffs))
        module = cli.model if module is None else module  # built (backbones loaded) by the first test, reused
        claim_run_dir(cli.trainer, "test", ckpt_path, overwrite)
        cli.trainer.test(module, datamodule=cli.datamodule, ckpt_path=ckpt_path)
        ev = next(c for c in cli.trainer.callbacks if isinstance(c, BenchmarkEvaluation))
        written[name] = str(Path(cli.trainer.log_dir) / f"{ev.evaluator.name}_results.json")
    from lit_bvllm.analysis.report import main as report

    report([f"{name}={path}" for name, path in written.items()])
    return written


LINKS = {"model.llm": "tokenizer", "model.vision_tower": "vision_tower", "model.video_token": "video_token"}
"""The parser's links, model setting -> the data module's init arg it sets (one setting for the model and the data)."""
LINKED = {target: f"--{source}" for source, target in LINKS.items()}  # a flag that sets a link target is refused
OPTIMISATION = ("lr", "lr_llm", "weight_decay", "warmup_ratio", "schedule")  # restored with the optimizer on resume
STRUCTURE = ("reducer", "feature_layer", "video_token", "lora_r", "lora_alpha")  # a checkpoint must agree on these
# read the run config training reads; methods below
CONFIG_COMMANDS = ("export", "scan", "shard", "preview", "show-selection")
REPORTING = ("probe-tower", "sweep", "study", "evaluate")  # print their own report (a table), not their return value
SETUP = {"make-tiny": make_tiny, "make-synthetic": make_synthetic, "probe-tower": probe_tower, "evaluate": evaluate,
         "sweep": sweep, "study": study, "consolidate": consolidate}  # no run config


OVERWRITE_HELP = ("replace the run directory (--trainer.logger.init_args.version) if it already holds a run: "
                  "delete it first, so no file of the old run stays beside the new one's. Without it such a run is "
                  "refused, except fit resuming with --ckpt_path from inside that directory")
LAUNCHER_RANKS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def first_process() -> bool:
    """Whether this is the first process of a launch (global rank 0 by its launcher's variables), the one that
    deletes run directories; the trainer's rank is not known yet where that is decided."""
    return all(os.environ.get(k, "0") == "0" for k in LAUNCHER_RANKS)


def claim_run_dir(trainer: L.Trainer, command: str, ckpt_path: str | None, overwrite: bool) -> Path | None:
    """Make sure a run does not write into another run's directory; the directory, or None when unchecked.

    The run directory is the logger's version folder (``<save_dir>/<name>/<version>``). Left unnamed, the version is
    a new ``version_N``. A named one (``--trainer.logger.init_args.version NAME``, or a config's) that already holds
    files (results, predictions, checkpoints, config) is refused, except for ``fit`` resuming from a checkpoint
    inside it (``--ckpt_path <dir>/checkpoints/last.ckpt``, or ``last``), which continues that run in place.
    ``overwrite`` deletes the directory first instead, so the old run's files are not mixed with the new run's.

    Called before the trainer starts or connects its processes, in each of them: no process writes there before
    they are all connected, so each sees the same files and decides alike, and only the first one (global rank 0 by
    its launcher's variables, :data:`LAUNCHER_RANKS`) deletes. Unchecked: loggers without version folders (only
    TensorBoard and CSV loggers have them) and ``--trainer.logger false``.
    """
    logger = trainer.loggers[0] if trainer.loggers else None
    if not isinstance(logger, (TensorBoardLogger, CSVLogger)):
        return None
    run = Path(logger.log_dir)
    held = sorted(p.name for p in run.iterdir()) if run.is_dir() else []
    if not held:
        return run
    inside = ckpt_path is not None and (
        ckpt_path in ("last", "hpc") or run.resolve() in Path(ckpt_path).resolve().parents)
    if inside and command == "fit" and not overwrite:  # a resume continues the run in place
        return run
    if (refusal := _refusal(run, held, command, ckpt_path, overwrite, inside)) is not None:
        raise refusal
    _delete_run(run, Path(logger.root_dir), len(held))
    return run


def _refusal(run: Path, held: list[str], command: str, ckpt_path: str | None, overwrite: bool,
             inside: bool) -> Exception | None:
    """Why a run directory that holds ``held`` may not be used (None: it may, deleted first)."""
    if inside and overwrite:  # whatever the command: deleting the run would delete the weights it is about to read
        return ValueError(f"--overwrite true would delete {run}, which holds the checkpoint this {command} reads "
                          f"(--ckpt_path {ckpt_path}); drop --overwrite, or name another run directory with "
                          "--trainer.logger.init_args.version NAME")
    if not overwrite:
        shown = ", ".join(held[:5]) + (f", ... ({len(held)} entries)" if len(held) > 5 else "")
        replace = "" if inside else ", replace it with --overwrite true"
        return FileExistsError(
            f"run directory {run} already holds a run ({shown}); name another with "
            f"--trainer.logger.init_args.version NAME (or set it to null for a new version_N){replace}, or resume a "
            f"training run with fit --ckpt_path {run / 'checkpoints' / 'last.ckpt'}")
    return None


def _delete_run(run: Path, logger_root: Path, entries: int) -> None:
    """``--overwrite true``: the first process (:data:`LAUNCHER_RANKS`) deletes the earlier run, never the working
    directory, a folder above it or the logger's root."""
    if not first_process():
        return  # the first process deletes
    target, here = run.resolve(), Path.cwd().resolve()
    if target == here or target in here.parents or target == logger_root.resolve():
        raise ValueError(f"--overwrite true would delete {run}, which is not a run's own folder (the working "
                         "directory, one above it, or the logger's root); name a version")
    shutil.rmtree(run)
    print(f"--overwrite true: deleted the earlier run in {run} ({entries} entries)", file=sys.stderr)


LOGGER_FILES = ("events.out.tfevents.", "hparams.yaml", "config.yaml", "metrics.csv")
"""What a logger writes as a run starts: a run directory holding only these holds no result of the run."""


def remove_failed_start(run: Path) -> bool:
    """Delete the run directory of a command that failed before its first step (a bad path, a model that does not
    load) when it holds nothing but what the logger wrote as it started, so that the retry may use the same name
    without ``--overwrite``; checkpoints, results and predictions are never deleted. Only the first process
    deletes. Whether it deleted."""
    if not first_process() or not run.is_dir():
        return False
    files = [p for p in run.rglob("*") if p.is_file()]
    if any(not p.name.startswith(LOGGER_FILES) for p in files):
        return False
    shutil.rmtree(run)
    print(f"the run failed before its first step: removed {run}, which held only its logger's files", file=sys.stderr)
    return True


EVALUATING = ("validate", "test", "predict")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def weights_name(ckpt_path: str | None, model) -> str | None:
    """What an evaluation's run folder is named after: the checkpoint's run and file
    (``runs/finetune/tiny/checkpoints/last.ckpt`` -> ``finetune-tiny-last``), else the exported folder
    (``--model.weights``), else the LLM's folder (zero-shot on the base weights); None for Lightning's own
    checkpoint names (``best``, ``last``), which name no file."""
    if ckpt_path in ("best", "last", "hpc", "registry"):
        return None
    if ckpt_path:
        path = Path(ckpt_path)
        parts = [*path.parts[-4:-2], path.stem] if path.parent.name == "checkpoints" else [path.parent.name, path.stem]
    elif model is not None and model.get("weights"):
        parts = [Path(str(model.get("weights"))).name]
    elif model is not None and model.get("llm"):
        parts = [Path(str(model.get("llm"))).name]
    else:
        return None
    return _UNSAFE.sub("-", "-".join(p for p in parts if p not in ("", ".", ".."))).strip("-") or None


def name_after_weights(cfg, ckpt_path: str | None) -> None:
    """An evaluation whose logger version is unset (``version: null``, the eval configs') gets its run folder named
    after the weights it evaluates (:func:`weights_name`), ``_2``, ``_3``, ... appended while that name holds a run:
    ``runs/eval_mvbench/finetune-tiny-last``, not ``version_7``. Only TensorBoard and CSV loggers have versions."""
    logger = cfg.trainer.get("logger")
    cls = _resolve(logger.get("class_path")) if hasattr(logger, "get") else None
    if not (isinstance(cls, type) and issubclass(cls, (TensorBoardLogger, CSVLogger))):
        return
    init = logger.get("init_args")
    if init is None or init.get("version") is not None or (name := weights_name(ckpt_path, cfg.get("model"))) is None:
        return
    root = Path(init.get("save_dir") or ".") / (init.get("name") or "lightning_logs")
    version, n = name, 1
    while (root / version).is_dir() and any((root / version).iterdir()):
        n += 1
        version = f"{name}_{n}"
    init.version = version


def link_visual_tokens(cfg) -> None:
    """``--data.visual_tokens`` (the visual tokens a sample's length reserves) from the reducer's budget θ, which the
    reducer states from its init args (:meth:`~lit_bvllm.reducers.base.Reducer.budget_from`), before anything loads:
    unset, it becomes θ (written into the config, so the run's ``config.yaml`` has it); set below θ, it is refused,
    naming both flags. A data module without the setting (the benchmarks') is left alone."""
    reducer, data = cfg.model.get("reducer"), getattr(cfg.get("data"), "init_args", None)
    if reducer is None or data is None or "visual_tokens" not in data:
        return
    cls = _resolve(reducer.get("class_path"))
    if not (isinstance(cls, type) and hasattr(cls, "budget_from")):
        return  # not a class: the parser names it when it builds the reducer
    budget = cls.budget_from(dict(reducer.get("init_args") or {}))
    if data.visual_tokens is None:
        data.visual_tokens = budget
    elif data.visual_tokens < budget:
        raise ValueError(f"--data.visual_tokens {data.visual_tokens} reserves fewer visual tokens per sample than the "
                         f"reducer's budget θ = {budget} ({reducer.class_path.rpartition('.')[2]}'s init args under "
                         f"--model.reducer.init_args): leave --data.visual_tokens unset (it follows θ), or lower θ")


def link_selector_tokenizer(cfg) -> None:
    """With ``--model.frame_selector`` set, the question is tokenized for its scorer: ``--data.question_tokenizer``
    defaults to the scorer's folder (``scorer``, else ``--model.vision_tower``). A text-conditioned reducer reads the
    same question ids in its own vocabulary, so the two are refused together unless the tokenizer was set to one
    folder on purpose and the reducer is not text-conditioned."""
    selector, data = cfg.model.get("frame_selector"), getattr(cfg.get("data"), "init_args", None)
    if selector is None or data is None or "question_tokenizer" not in data:
        return
    reducer = cfg.model.get("reducer")
    cls = _resolve(getattr(reducer, "class_path", None))
    if getattr(cls, "needs_text", False):
        raise ValueError(f"--model.frame_selector ({selector.class_path.rsplit('.', 1)[-1]}) reads the question in "
                         f"its scorer's tokenizer, and --model.reducer ({cls.__name__}) reads it in its own: they "
                         "cannot share --data.question_tokenizer. Compose a selector with a reducer that does not read "
                         "the question (Uniform, MeanPool, VisionZip, FastVID, ...), or unset --model.frame_selector")
    scorer = (getattr(selector, "init_args", None) or {}).get("scorer") or cfg.model.get("vision_tower")
    if data.question_tokenizer is None:
        data.question_tokenizer = str(scorer)


def link_question_tokenizer(cfg) -> None:
    """Default and check the tokenizer of a text-conditioned reducer's question (``--data.question_tokenizer``;
    unset: the LLM's), before any model loads.

    With ``--model.reducer.init_args.qformer`` set and no question tokenizer given, the checkpoint's own
    ``qformer_tokenizer/`` (where an InstructBLIP folder keeps its BERT tokenizer) becomes it, written into the
    config (the run's ``config.yaml`` records it). Without a checkpoint and with ``vocab_size`` unset, the reducer's
    ``vocab_size`` becomes the question tokenizer's size (a link, written into the config too). Then the question
    tokenizer must fit the Q-Former's vocabulary (the checkpoint's ``qformer_config.vocab_size``, else the
    reducer's ``vocab_size``), and beside a checkpoint's
    ``qformer_tokenizer/`` give each of its tokens that tokenizer's id (the pretrained word embeddings are indexed
    by those ids): a mismatch is refused here, naming both flags, not an IndexError on the first batch after the
    LLM has loaded (STYLE.md 15). Folders that do not exist are left to the loaders, which name them.
    """
    args, data = getattr(cfg.model.get("reducer"), "init_args", None), getattr(cfg.get("data"), "init_args", None)
    if args is None or data is None or "question_tokenizer" not in data:
        return
    qformer, vocab, reference = args.get("qformer"), args.get("vocab_size"), None
    if qformer is not None:
        if not (Path(qformer) / "config.json").is_file():
            return  # the reducer's Q-Former refuses it, naming the folder and the flag
        vocab = pretrained_config(qformer).vocab_size
        if (Path(qformer) / QFORMER_TOKENIZER).is_dir():
            reference = str(Path(qformer) / QFORMER_TOKENIZER)
            if data.question_tokenizer is None:
                data.question_tokenizer = reference
    if "vocab_size" not in args:
        return  # a reducer without a question vocabulary
    from datamodules.loading import load_tokenizer

    path, llm = data.question_tokenizer, cfg.model.get("llm")
    given = f"--data.question_tokenizer '{path}'" if path else f"--data.question_tokenizer (unset: the LLM's, '{llm}')"
    if not Path(path or llm or "").is_dir():
        return
    tokenizer = load_tokenizer(path or llm, None, "--data.question_tokenizer" if path else "--model.llm")
    ids = tokenizer.get_vocab()
    size = len(tokenizer) + (0 if path or cfg.model.get("video_token") in ids else 1)  # the LLM's gets the placeholder
    if vocab is None:  # the link: the reducer embeds what the question tokenizer writes
        vocab = args.vocab_size = size
    source = (f"the vocab_size of the checkpoint --model.reducer.init_args.qformer '{qformer}'" if qformer else
              "--model.reducer.init_args.vocab_size")
    fix = (f"set --data.question_tokenizer to '{reference}' (or leave it unset)" if reference else
           f"set --data.question_tokenizer to a tokenizer of at most {vocab} tokens")
    fix += (", or --model.reducer.init_args.qformer to the checkpoint that tokenizer belongs to" if qformer else
            f", or --model.reducer.init_args.vocab_size to at least {size}")
    if size > vocab:
        raise ValueError(f"{given} has {size} tokens, but the reducer's Q-Former embeds {vocab} ({source}): "
                         f"{fix}")
    if reference and path != reference:
        theirs = load_tokenizer(reference, None, "--model.reducer.init_args.qformer").get_vocab()
        other = sorted(t for t, i in ids.items() if theirs.get(t) != i)
        if other:
            raise ValueError(f"{given} gives {len(other)} of its tokens other ids than '{reference}', whose ids the "
                             f"checkpoint's Q-Former (--model.reducer.init_args.qformer) was trained on (e.g. "
                             f"{other[:3]}): {fix}")


SUITE_CALLBACKS = [f"{cls.__module__}.{cls.__qualname__}" for cls in (
    SkippedSamplesLogger, RunSummary, RNGState, BenchmarkEvaluation, PredictionWriter, SelectionFigures,
    ProgressLog, TrainingMetrics)] + ["lightning.pytorch.callbacks.LearningRateMonitor"]
"""The suite's own machinery, in every run: skipped-sample counts, the run summary, the RNG streams in the
checkpoint, benchmark scoring, prediction files, what the reducer selected, progress lines in a log file, the
gradient norm, throughput and peak memory, the learning rate in the logs."""
CHECKPOINT = {"filename": "step{step}", "save_last": True, "save_top_k": -1, "every_n_train_steps": 500,
              "auto_insert_metric_name": False}
"""A config without a ModelCheckpoint gets this one (every 500 steps, and last.ckpt for ``--ckpt_path last``)."""


def add_suite_callbacks(trainer) -> None:
    """Write the suite's callbacks (:data:`SUITE_CALLBACKS`, and :data:`CHECKPOINT` where checkpointing is on and the
    config names no ModelCheckpoint) into the config's ``trainer.callbacks``, before the trainer is built: the
    run's ``config.yaml`` shows every callback of the run, and replaying it adds none twice."""
    from jsonargparse import Namespace

    callbacks = trainer.get("callbacks")
    callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    named = [_resolve(_class_path(c)) for c in callbacks]

    def given(path: str) -> bool:  # the config has it, or a subclass of it
        cls = _resolve(path)
        return any(isinstance(n, type) and issubclass(n, cls) for n in named)

    checkpointing = trainer.get("enable_checkpointing", True) is not False
    if checkpointing and not given("lightning.pytorch.callbacks.ModelCheckpoint"):
        callbacks.append(Namespace(class_path="lightning.pytorch.callbacks.ModelCheckpoint",
                                   init_args=Namespace(**CHECKPOINT)))
    progress = "lit_bvllm.training.callbacks.ProgressBar"
    if (trainer.get("enable_progress_bar", True) is not False and _resolve(progress) is not progress
            and not given("lightning.pytorch.callbacks.progress.progress_bar.ProgressBar")):
        callbacks.append(Namespace(class_path=progress, init_args=Namespace()))
    for path in SUITE_CALLBACKS:
        if not given(path):
            init = Namespace(logging_interval="step") if path.endswith("LearningRateMonitor") else Namespace()
            callbacks.append(Namespace(class_path=path, init_args=init))
    trainer.callbacks = callbacks


def _class_path(spec) -> str | None:
    """The class path of a callback as the config holds it (a ``class_path`` entry, or an instance)."""
    if hasattr(spec, "get") and spec.get("class_path"):
        return spec.get("class_path")
    return f"{type(spec).__module__}.{type(spec).__qualname__}"


LINKED_INIT_ARGS = ("vocab_size",)
"""Reducer init args that, left unset, follow the data (:func:`link_question_tokenizer`)."""


def structure_differences(saved: dict, model, evaluating: bool) -> list[str]:
    """The :data:`STRUCTURE` settings in which a checkpoint's hyperparameters (``saved``) and the config's ``model``
    differ. Evaluating, the reducer's forward-pass knobs (its ``inference_args``: L*, R, θ, τ, γ, ...) may differ:
    the sweeps of the B-VLLM paper's Fig. 3 change them on one trained model; and a training-free reducer
    (``training_free``: VisionZip, FastVID, Uniform, ...) may replace the checkpoint's, as the training-free papers
    evaluate on the full model: the checkpoint's tensors must still fit it (its projector's width; a checkpoint
    whose reducer has weights is refused when they load)."""
    diffs = []
    for key in STRUCTURE:
        if key not in saved:
            continue
        ours = model.get(key)
        ours = ours.as_dict() if hasattr(ours, "as_dict") else ours
        theirs = saved[key]
        if key == "reducer":
            args, their_args = (ours or {}).get("init_args") or {}, theirs.get("init_args") or {}
            cls = _resolve(ours.get("class_path"))
            if evaluating and getattr(cls, "training_free", False):
                continue  # nothing of it was trained: it may stand in for any reducer (the tensors are checked on load)
            free = set(getattr(cls, "inference_args", set())) if evaluating else set()
            free |= {k for k in LINKED_INIT_ARGS if args.get(k) is None}  # unset: set from the data after this check
            same = _same_class(ours.get("class_path"), theirs.get("class_path")) and all(
                args[k] == their_args[k] for k in set(args) & set(their_args) - free)
        else:
            same = ours == theirs
        if not same:
            diffs.append(f"{key}: checkpoint {theirs} vs config {ours}")
    return diffs


class SuiteParser(LightningArgumentParser):
    """The parser of every subcommand, whose errors are short: the error, the closest valid option where one is
    close, and where the help is; the usage (70 lines) only on ``--help``."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)  # raised to the caller (a parser inside another, a test)
        parser = getattr(ex, "subcommand_parser", None) or self
        self._logger.error(message)
        lines = [f"error: {short_error(message)}"]
        if hint := closest_option(message, parser):
            lines.append(hint)
        lines.append(f"see: {parser.prog.replace(' [options]', '')} --help")
        sys.stderr.write("\n".join(lines) + "\n")
        self.exit(2)


def short_error(message: str) -> str:
    """jsonargparse's message without the type expression it prints before the reason."""
    message = " ".join(message.split())
    reason = re.search(r"(Option '[^']+' is not accepted|Unrecognized arguments: .*|Key \"[^\"]+\" is required.*)",
                       message, re.IGNORECASE)
    key = re.match(r'Parser key "([^"]+)":', message)
    if reason:
        return (f"--{key.group(1)}: " if key else "") + reason.group(1).split(". Got value")[0]
    return message[:400]


KEY_CLASSES = {"data": [VideoInstructDataModule, BenchmarkDataModule], "model": [VideoLLMModule]}
"""The classes whose init args a bad ``--<key>.<option>`` is compared with when the message names no class."""


def closest_option(message: str, parser) -> str | None:
    """'did you mean ...' for an unknown option: the class's own init args for a class_path argument (a reducer's
    ``num_frame``), else the subcommand's flags (``--trainer.max_step``)."""
    import difflib

    if m := re.search(r"Option '([^']+)' is not accepted", message):
        key = re.match(r'Parser key "([^"]+)":', message)
        cls = re.search(r"class_path='([\w.]+)'", message)
        targets = [_resolve(cls.group(1))] if cls else KEY_CLASSES.get(key.group(1) if key else "", [])
        names = [n for target in targets if isinstance(target, type)
                 for n in inspect.signature(target.__init__).parameters if n not in ("self", "in_dim")]
        if close := difflib.get_close_matches(m.group(1), names, n=1):
            where = f"--{key.group(1)}." + ("init_args." if cls else "") if key else ""
            return f"did you mean {where}{close[0]}?"
    if m := re.search(r"Unrecognized arguments: (\S+)", message, re.IGNORECASE):
        flag = m.group(1).split("=", 1)[0]
        options = [o for o in getattr(parser, "_option_string_actions", {}) if o.startswith("--")]
        if close := difflib.get_close_matches(flag, options, n=1, cutoff=0.75):
            return f"did you mean {close[0]}?"
    return None


def summary(obj) -> str:
    """The first paragraph of a docstring, on one line: a subcommand's description (its first line was cut
    mid-sentence)."""
    return " ".join((getattr(obj, "__doc__", None) or "").strip().split("\n\n")[0].split())


def own_flags_first(parser, name: str, method) -> None:
    """``--help`` of a config command (export, scan, preview, show-selection) starts with its own flags: a short usage
    line, then the group of the method's arguments, then the run config's (trainer, model, data) it shares with fit.
    Their help listed those 500 lines first, and the command's own flags at its end."""
    own = [n for n in inspect.signature(method).parameters if n not in ("self", "model", "datamodule")]
    groups = [g for g in parser._action_groups if any(a.dest in own for a in g._group_actions)]
    parser._action_groups = [*groups, *(g for g in parser._action_groups if g not in groups)]
    flags = " ".join(f"[--{n} ...]" for n in own if n != "ckpt_path")
    parser.usage = (f"lit_bvllm {name} [--config CONFIG ...] {flags} [--ckpt_path CKPT] "
                    "[--trainer.* / --model.* / --data.* as fit takes them]")


class VideoCLI(LightningCLI):
    """LightningCLI with the suite's subcommands, checks and defaults (see the module docstring). ``weights``: the
    checkpoint a caller evaluates with this config (``evaluate``; "": none), which names its run folder."""

    def __init__(self, *args, weights: str | None = None, **kwargs) -> None:
        self.weights = weights
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), **{c: {"model", "datamodule"} for c in CONFIG_COMMANDS}}

    def _add_subcommands(self, parser, **kwargs) -> None:
        """Lightning's loop over its trainer commands, extended: a config command's arguments come from this
        class's method, a setup command's from its function."""
        self._subcommand_parsers = {}
        self._setup_arguments: dict[str, set[str]] = {}
        subcommands = parser.add_subcommands()
        for name in self.subcommands():
            klass = self.trainer_class if name in LightningCLI.subcommands() else type(self)
            description = summary(getattr(klass, name.replace("-", "_"), None))
            sub = self._prepare_subcommand_parser(klass, name, **{"description": description, **kwargs.get(name, {})})
            if name in LightningCLI.subcommands():  # the commands that write a run directory
                sub.add_argument("--overwrite", type=bool, default=False, help=OVERWRITE_HELP)
            else:
                own_flags_first(sub, name, getattr(klass, name.replace("-", "_")))
            self._subcommand_parsers[name] = sub
            subcommands.add_subcommand(name, sub, help=description)
        for name, fn in SETUP.items():
            description = summary(fn)
            sub = self.init_parser(description=description)
            self._setup_arguments[name] = set(sub.add_function_arguments(fn, as_group=False))
            self._subcommand_parsers[name] = sub
            subcommands.add_subcommand(name, sub, help=description)

    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` against the config. Lightning's default replaces the config's model settings by
        the checkpoint's, explicit flags included; here the config stays what it says, the checkpoint is read
        safely (and kept for the commands that take their weights from it), and a checkpoint of another model
        structure, or a resumed fit with other optimisation settings, stops the run with the differences listed."""
        sub = self.config.get("subcommand")
        if not sub or sub in SETUP:
            return
        ckpt_path = self.config[sub].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return  # none, or "last"/"best": Lightning resolves it, and the model checks what it loads
        checkpoint = read_checkpoint(ckpt_path, "--ckpt_path")
        if sub in CONFIG_COMMANDS:  # export, show-selection take their weights from it: read once (a fit lets it go)
            self.checkpoint = checkpoint
        saved, model = checkpoint.get("hyper_parameters") or {}, self.config[sub]["model"]
        if diffs := structure_differences(saved, model, evaluating=sub != "fit"):
            raise ValueError(f"--ckpt_path '{ckpt_path}' holds another model than this config describes: "
                             + "; ".join(diffs) + ". Use the config of the run that wrote it (its config.yaml).")
        # a resumed fit restores the optimizer and schedule state, learning rates included: a changed value would
        # be silently replaced by the checkpoint's, so it is refused (max_steps does apply: the schedule stretches)
        if sub == "fit" and (changed := [f"{k}: checkpoint {saved[k]} vs config {model.get(k)}" for k in OPTIMISATION
                                         if k in saved and saved[k] != model.get(k)]):
            raise ValueError(f"resuming from --ckpt_path '{ckpt_path}' restores its optimizer and schedule, so "
                             "these settings cannot change: " + "; ".join(changed) + ". Resume with the run's own "
                             "values, or start a new run from its weights (--model.init_from).")

    def _set_seed(self) -> None:
        if self.subcommand not in SETUP:
            super()._set_seed()

    def parse_arguments(self, parser, args) -> None:
        """Refuse a flag that sets a linked data setting: the link would override it without a word (the console
        script hands no ``args``: LightningCLI reads ``sys.argv``, and so does this check)."""
        for arg in sys.argv[1:] if args is None else args:
            key = str(arg).split("=", 1)[0]
            for name, source in LINKED.items():
                if key in (f"--data.{name}", f"--data.init_args.{name}"):
                    raise ValueError(f"{key} is set from {source} (one setting for the model and the data); set "
                                     f"{source} instead")
        super().parse_arguments(parser, args)

    def add_arguments_to_parser(self, parser) -> None:
        for source, target in LINKS.items():  # the data writes the placeholder the model splices at, and so on
            parser.link_arguments(source, f"data.init_args.{target}")

    def before_instantiate_classes(self) -> None:
        if self.subcommand in SETUP:
            return
        cfg = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        # read here, and saved as false in the run's config.yaml: replaying a snapshot never deletes a run
        self.overwrite_run = bool(cfg.get("overwrite"))
        if "overwrite" in cfg:
            cfg.overwrite = False
        if cfg.trainer.get("precision") is None:  # bf16-mixed where the hardware has it
            bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            cfg.trainer.precision = "bf16-mixed" if bf16 else "32-true"
        link_visual_tokens(cfg)
        link_selector_tokenizer(cfg)
        link_question_tokenizer(cfg)
        if self.subcommand in EVALUATING or self.weights is not None:
            name_after_weights(cfg, cfg.get("ckpt_path") or self.weights or None)
        add_suite_callbacks(cfg.trainer)

    def instantiate_classes(self) -> None:
        if self.subcommand in SETUP:
            self.model = self.datamodule = self.trainer = None
            return
        super().instantiate_classes()

    def instantiate_trainer(self, **kwargs):
        """Checkpoints are written atomically (:class:`AtomicCheckpointIO`) unless the config names its own
        checkpoint IO. Added here, not as a parser or trainer default: an instance there is written into the run's
        ``config.yaml`` as "Unable to serialize instance", and the snapshot no longer replays."""
        trainer = self._get(self.config_init, "trainer", default={})
        plugins = trainer.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        return super().instantiate_trainer(**{"plugins": plugins, **kwargs})

    def _run_subcommand(self, subcommand: str) -> None:
        if subcommand in SETUP:
            cfg = self.config[subcommand]
            result = SETUP[subcommand](**{k: cfg[k] for k in self._setup_arguments[subcommand]})
            if result is not None and subcommand not in REPORTING:
                print(json.dumps(result, indent=2, default=str))
            return
        if subcommand in CONFIG_COMMANDS:  # Lightning looks the command up on the trainer first
            getattr(self, subcommand)(**self._prepare_subcommand_kwargs(subcommand))
            return
        run = claim_run_dir(self.trainer, subcommand, self.config_init[subcommand].get("ckpt_path"),
                            getattr(self, "overwrite_run", False))
        fresh = run is not None and not (run.is_dir() and any(run.iterdir()))
        try:
            super()._run_subcommand(subcommand)
        except Exception:
            if fresh and self.trainer.global_step == 0:
                remove_failed_start(run)
            raise

    # ------------------------------------------------------------ commands that read the run config

    def export(self, model, datamodule=None, ckpt_path: str | None = None, out: str = "export",
               merge_lora: bool = False) -> None:
        """Write the config's model with a checkpoint's weights to a folder that loads without Lightning.

        Args:
            ckpt_path: the training checkpoint (``runs/<stage>/<version>/checkpoints/last.ckpt``).
            out: the export folder (:mod:`lit_bvllm.export`).
            merge_lora: merge the LoRA weights into the LLM (else an adapter folder beside the base LLM).
        """
        if ckpt_path is None:
            raise ValueError("lit_bvllm export needs --ckpt_path (a training checkpoint)")
        loaded = self._load_trained(model, ckpt_path)
        path = export_model(model.model, out, merge_lora=merge_lora)
        print(f"exported {loaded} trained tensors to {path}")

    def _load_trained(self, model, ckpt_path: str | None) -> int:
        """Build ``model`` and load a training checkpoint's tensors into it (checked; none without ``ckpt_path``);
        their number. ``init_from`` is skipped: it is for fitting, and the checkpoint holds every trained tensor."""
        model.hparams.init_from = None
        model.configure_model()
        if ckpt_path is None:
            return 0
        state = (getattr(self, "checkpoint", None) or read_checkpoint(ckpt_path, "--ckpt_path")).get("state_dict") or {}
        model.check_state(state, f"--ckpt_path '{ckpt_path}'")
        model.load_state_dict(state, strict=False)
        return len(state)

    def scan(self, model, datamodule, out: str = "scan_report.json", workers: int = 2, decode: bool = False,
             timeout: float = 300.0) -> None:
        """Validate every entry of the training (and validation) set; the report is usable as --data.blocklist.

        Args:
            out: report path (JSON).
            workers: parallel processes.
            decode: decode every sampled frame, not only headers (slower, catches mid-file corruption).
            timeout: seconds one entry's check may take before it is reported crashed and the scan goes on.
        """
        scan(datamodule, out, workers, decode, timeout)

    def shard(self, model, datamodule, out: str, workers: int = 2, frames: Literal["jpeg", "raw"] = "jpeg",
              jpeg_quality: int = 90, chunk_bytes: str = "64MB", timeout: float = 300.0,
              overwrite: bool = False) -> None:
        """Decode the training (and validation) set once at its sampling rule and write litdata frame shards, for
        ``fit --data.streaming OUT`` (:mod:`datamodules.shards`); bad entries are listed in OUT/shard_report.json.

        Args:
            out: the shard folder (local, or an object-store URL such as s3://bucket/prefix).
            workers: processes that check and decode entries.
            frames: jpeg (each resized frame a JPEG image) or raw (its uint8 pixels).
            jpeg_quality: JPEG quality (1-95; 4:4:4 chroma).
            chunk_bytes: size of litdata's chunks.
            timeout: seconds one entry's header check may take before it is reported crashed.
            overwrite: replace a local OUT that holds shards made with other settings.
        """
        from datamodules.shards import write_shards

        m = write_shards(datamodule, out, workers, frames, jpeg_quality, chunk_bytes, timeout, overwrite)
        sizes = ", ".join(f"{split} {sum(d['samples'] for d in parts)}" for split, parts in m["splits"].items())
        print(f"wrote {m['written']} samples ({sizes}) to {out} in {m['seconds']} s; {m['bad']} entries left out "
              f"{m['counts']} (listed in {out}/shard_report.json). Train on them: lit_bvllm fit <the same config> "
              f"--data.streaming {out}")

    def preview(self, model, datamodule, num_samples: int = 4) -> None:
        """Decode one training batch and print it: shapes, frames and times, and the text with supervised spans.

        Args:
            num_samples: samples printed (the batch size is set to this).
        """
        preview(datamodule, num_samples)

    def show_selection(self, model, datamodule, video: str, question: str, ckpt_path: str | None = None,
                       options: list[str] | None = None, out: str = "selection.png", fps: float = 1.0,
                       max_frames: int | None = 128, needle_times: list[list[float]] | None = None) -> None:
        """Ask the trained model a question about one video and draw what its reducer kept (PNG): every frame at
        ``fps``, the kept ones outlined with their selection weight and merge group, the answer, and each kept frame's
        spatial attention (:mod:`lit_bvllm.analysis.selection`).

        Args:
            video: the video file.
            question: the question, as a benchmark would ask it.
            ckpt_path: the training checkpoint (``runs/finetune/tiny/checkpoints/last.ckpt``); or ``--model.weights``.
            options: multiple-choice options (then VNBench's prompt: bracketed options, answer with the letter).
            out: the PNG written.
            fps: frames per second sampled, as ``lit_bvllm test`` does.
            max_frames: the most frames sampled (uniformly thinned over the whole video).
            needle_times: ``[[start, end], ...]`` seconds to mark as the evidence (the synthetic set's needles).
        """
        from lit_bvllm.analysis.selection import show_selection

        if not self._load_trained(model, ckpt_path) and model.hparams.get("weights") is None:
            print("warning: no --ckpt_path or --model.weights: drawing an untrained reducer's selection",
                  file=sys.stderr)
        h = datamodule.hparams
        result = show_selection(model.model, video, question, out, options, model.hparams.vision_tower,
                                h.get("transform", "processor"), fps, max_frames, h.get("question_tokenizer"),
                                needle_times)
        print(json.dumps(result, indent=1))


# the command is spelt as the setup commands are (make-tiny); the parser and the runner look methods up by that name
setattr(VideoCLI, "show-selection", VideoCLI.show_selection)


def lightning_cli(args: list[str] | None = None, run: bool = True, weights: str | None = None):
    """The one parser of every ``lit_bvllm`` subcommand: a LightningCLI over
    :class:`~lit_bvllm.training.lit_module.VideoLLMModule` and any LightningDataModule (``class_path``).

    Lightning's trainer commands (fit, validate, test, predict), the commands that read the same run config
    (export, scan, preview: methods of this CLI) and the setup commands (make-tiny, make-synthetic, probe-tower:
    functions, no run config) are subcommands of one root parser.
    """
    return VideoCLI(
        VideoLLMModule,
        L.LightningDataModule,
        parser_class=SuiteParser,
        auto_configure_optimizers=False,  # the module builds its own (--model.lr, lr_llm, schedule): --optimizer was
                                          # offered by --help and failed with "empty parameter list"
        subclass_mode_data=True,
        args=args,
        run=run,
        weights=weights,
        save_config_callback=KeepingConfigSnapshot,  # never overwrites an earlier run's config.yaml
        trainer_defaults={"use_distributed_sampler": False},  # the data module shards with its own resumable sampler
    )


def _resolve(path: str | None):
    """The object a class path names, or the path itself when it names none."""
    module, _, name = (path or "").rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return path


def _same_class(a: str | None, b: str | None) -> bool:
    """Whether two class paths name one class (``lit_bvllm.reducers.BVLLM`` is ``lit_bvllm.reducers.bvllm.BVLLM``)."""
    return a == b or _resolve(a) is _resolve(b)


def _underscore_flags(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0].replace("-", "_").replace("__", "--", 1) + ("=" + a.split("=", 1)[1] if "=" in a else "")
            if a.startswith("--") else a for a in argv]


def run(argv: list[str] | None = None) -> None:
    """The ``lit_bvllm`` command line (``argv``, else ``sys.argv``) through :func:`lightning_cli`; the process is set
    up by :func:`lit_bvllm.cli.main`, which calls this."""
    if argv is not None:
        lightning_cli(_underscore_flags(list(argv)))
        return
    # the console script: LightningCLI reads sys.argv itself, and the process Lightning starts for every further
    # device (DDP's subprocess launcher) re-runs this very command line; emptying sys.argv left them without one
    sys.argv = sys.argv[:1] + _underscore_flags(sys.argv[1:])
    lightning_cli()


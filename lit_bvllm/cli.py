"""The ``lit_bvllm`` command.

Subcommands::

    lit_bvllm fit --config experiments/pretrain.yaml      train (LightningCLI: also validate, test, predict)
    lit_bvllm export --config CFG --ckpt_path CKPT --out DIR [--merge_lora true]   a folder that loads without Lightning
    lit_bvllm make-tiny --out DIR                 tiny local vision tower, LLM and tokenizer
    lit_bvllm make-synthetic --out DIR            synthetic mp4 videos and annotations in the public formats
    lit_bvllm probe-tower --vision_tower DIR --data DIR   linear probes: does the tower's [CLS] see the needle?
    lit_bvllm scan --config CFG [--out FILE]      validate a training set before a long run (report = blocklist)
    lit_bvllm preview --config CFG                decode and print one training batch

``--config`` files hold a ``data:`` section (a ``VideoInstructDataModule``); ``--data.<arg>`` overrides one value.
Flags accept dashes or underscores (``--num-videos`` = ``--num_videos``).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub: every checkpoint is a local folder
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from datamodules import VideoInstructDataModule  # noqa: E402


def scan(data: VideoInstructDataModule, out: str = "scan_report.json", workers: int = 2, decode: bool = False) -> None:
    """Validate every entry of the training (and validation) set and write a report usable as --data.blocklist.

    Args:
        data: the data section of a training config.
        out: report path (JSON).
        workers: parallel processes.
        decode: decode every sampled frame, not only headers (slower, catches mid-file corruption).
    """
    from datamodules.scan import scan_dataset, write_report

    data.hparams.blocklist = None  # a scan looks at every entry
    data.setup("fit")
    report = scan_dataset([d for d in (data.train_set, data.val_set) if d is not None], workers, decode)
    path = write_report(report, out)
    print(f"scanned {report['entries']} entries in {report['seconds']} s: {report['ok']} ok, {report['bad']} bad "
          f"{report['counts']}; report: {path}" + (f" (use --data.blocklist={path})" if report["bad"] else ""))


def preview(data: VideoInstructDataModule, num_samples: int = 4) -> None:
    """Decode one training batch and print it: shapes, frames and times, and the text with supervised spans in [[ ]].

    Args:
        data: the data section of a training config.
        num_samples: samples printed (the batch size is set to this).
    """
    from datamodules.conversation import IGNORE_INDEX

    data.hparams.batch_size, data.hparams.num_workers = num_samples, 0
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    tok = data.tokenizer
    print(f"train set: {len(data.train_set)} samples from {len(data.train_set.files)} file(s)")
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


def _commands() -> dict:
    from lit_bvllm.probe import probe_tower
    from lit_bvllm.synthetic import make_synthetic
    from lit_bvllm.tiny import make_tiny

    return {"make-tiny": make_tiny, "make-synthetic": make_synthetic, "probe-tower": probe_tower, "scan": scan,
            "preview": preview}


COMMANDS = ("make-tiny", "make-synthetic", "probe-tower", "scan", "preview", "export")
REPORTING = ("probe-tower",)  # commands that print their own report (a table) instead of their return value
TRAINER_COMMANDS = ("fit", "validate", "test", "predict")


def lightning_cli(args: list[str] | None = None, run: bool = True):
    """The LightningCLI over :class:`~lit_bvllm.lit_module.VideoLLMModule` and any LightningDataModule
    (``class_path``)."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from datamodules import SkippedSamplesLogger
    from lit_bvllm.callbacks import BenchmarkEvaluation, KeepingConfigSnapshot, PredictionWriter, RNGState, RunSummary
    from lit_bvllm.checkpointing import AtomicCheckpointIO
    from lit_bvllm.lit_module import VideoLLMModule

    def default_checkpoint() -> ModelCheckpoint:
        return ModelCheckpoint(filename="step{step}", save_last=True, save_top_k=-1, every_n_train_steps=500,
                               auto_insert_metric_name=False)

    class VideoCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.link_arguments("model.llm", "data.init_args.tokenizer")
            parser.link_arguments("model.vision_tower", "data.init_args.vision_tower")
            # the data writes the placeholder the model splices at: one setting, --model.video_token
            parser.link_arguments("model.video_token", "data.init_args.video_token")

        def before_instantiate_classes(self) -> None:
            import torch

            cfg = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
            if cfg.trainer.get("precision") is None:  # bf16-mixed where the hardware has it
                bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                cfg.trainer.precision = "bf16-mixed" if bf16 else "32-true"

        def instantiate_trainer(self, **kwargs):
            """Checkpoints are written atomically (:class:`AtomicCheckpointIO`) unless the config names its own
            checkpoint IO. Added here, not as a parser default: an instance there is written into the run's
            ``config.yaml`` as "Unable to serialize instance", and the snapshot no longer replays."""
            from lightning.pytorch.plugins.io import CheckpointIO

            trainer = self._get(self.config_init, "trainer", default={})
            plugins = trainer.get("plugins")
            plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
            if not any(isinstance(p, CheckpointIO) for p in plugins):
                plugins.append(AtomicCheckpointIO())
            # the checkpoint interval lives in the config (experiments/pretrain.yaml); a config without a
            # ModelCheckpoint still gets the suite's (every 500 steps, last.ckpt for --ckpt_path last)
            callbacks = trainer.get("callbacks")
            callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
            if trainer.get("enable_checkpointing", True) is not False and not any(
                    isinstance(c, ModelCheckpoint) for c in callbacks):
                callbacks.append(default_checkpoint())
            return super().instantiate_trainer(**{"plugins": plugins, "callbacks": callbacks, **kwargs})

    return VideoCLI(
        VideoLLMModule,
        L.LightningDataModule,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_callback=KeepingConfigSnapshot,  # never overwrites an earlier run's config.yaml
        trainer_defaults={
            "callbacks": [
                SkippedSamplesLogger(),
                RunSummary(),
                RNGState(),
                BenchmarkEvaluation(),
                PredictionWriter(),
                LearningRateMonitor(logging_interval="step"),
            ],
            "use_distributed_sampler": False,  # the data module shards with its own resumable sampler
        },
    )


def export_command(argv: list[str]) -> None:
    """``export --config ... --ckpt_path CKPT --out DIR [--merge_lora true]``: the model of the config with the
    checkpoint's weights, written by :func:`lit_bvllm.export.export`."""
    import argparse

    import torch

    from lit_bvllm.export import export

    ap = argparse.ArgumentParser(prog="lit_bvllm export", description=export_command.__doc__)
    ap.add_argument("--ckpt_path", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--merge_lora", default="false", choices=["true", "false"])
    ours, rest = ap.parse_known_args(_underscore_flags(argv))
    cli = lightning_cli(rest + ["--trainer.logger", "false"], run=False)
    cli.model.hparams.init_from = None  # the checkpoint holds every trained tensor
    cli.model.configure_model()
    state = torch.load(ours.ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
    cli.model.load_state_dict(state, strict=False)
    path = export(cli.model.model, ours.out, merge_lora=ours.merge_lora == "true")
    print(f"exported {len(state)} trained tensors to {path}")


def _underscore_flags(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0].replace("-", "_").replace("__", "--", 1) + ("=" + a.split("=", 1)[1] if "=" in a else "")
            if a.startswith("--") else a for a in argv]


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import auto_cli

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "export":
        export_command(argv[1:])
        return
    if argv and argv[0] in TRAINER_COMMANDS:
        lightning_cli(argv)
        return
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"unknown command '{argv[0]}'; choose one of: {', '.join(TRAINER_COMMANDS + COMMANDS)}")
        return
    result = auto_cli(_commands()[argv[0]], args=_underscore_flags(argv[1:]), as_positional=False)
    if result is not None and argv[0] not in REPORTING:
        print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()

"""The ``lit_bvllm`` command: one parser (:func:`lit_bvllm.cli.commands.lightning_cli`) for every subcommand.

Subcommands::

    lit_bvllm fit --config experiments/pretrain.yaml      train (LightningCLI: also validate, test, predict)
    lit_bvllm export --config CFG --ckpt_path CKPT --out DIR [--merge_lora true]   a folder that loads without Lightning
    lit_bvllm scan --config CFG [--out FILE]      validate a training set before a long run (report = blocklist)
    lit_bvllm shard --config CFG --out DIR        decode the training set once into litdata frame shards; then
                                                  lit_bvllm fit --config CFG --data.streaming DIR
    lit_bvllm preview --config CFG                decode and print one training batch
    lit_bvllm show-selection --config CFG --ckpt_path CKPT --video V --question Q   what the reducer keeps, drawn
    lit_bvllm evaluate --tasks mvbench,videomme --ckpt_path CKPT   several benchmarks, one model load, one table
    lit_bvllm make-tiny --out DIR                 tiny local vision tower, LLM and tokenizer
    lit_bvllm make-synthetic --out DIR            synthetic mp4 videos and annotations in the public formats
    lit_bvllm probe-tower --vision_tower DIR --data DIR   linear probes: does the tower's [CLS] see the needle?
    lit_bvllm sweep --config experiments/sweeps/NAME.yaml [--dry-run true]   a grid of test or fit runs, table, curves
    lit_bvllm study [--quick true]                the needle study: every strategy, controls, ablation; tables, figures
    lit_bvllm consolidate --ckpt_path DIR [--out FILE]   one file from a sharded (FSDP2) checkpoint folder

fit, validate, test and predict write to a run directory, ``runs/<name>/<version>``: a new ``version_N`` unless the
version is named (an evaluation's unnamed version is named after its weights, ``finetune-tiny-last``), and a named one
that already holds a run is refused (``--overwrite true`` deletes it first; ``fit --ckpt_path`` from inside it resumes
there): :func:`lit_bvllm.cli.commands.claim_run_dir`.

export, scan, shard and preview read the configs training reads (``--config experiments/pretrain.yaml [--config
experiments/finetune.yaml]``); ``--data.<arg>`` overrides one value. Flags accept dashes or underscores
(``--num-videos`` = ``--num_videos``).
"""

from __future__ import annotations

import os

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
"""Environment defaults of every ``lit_bvllm`` process: never reach a model or dataset hub (every checkpoint is a
local folder), no tokenizer threads beside DataLoader workers. A value already set is kept."""


def setup_process() -> None:
    """Set up this process for the suite, once, before anything imports transformers (whose hub settings are read at
    import): :data:`OFFLINE`, the thread choice (:func:`datamodules.loading.record_thread_choice`, before a launcher
    sets ``OMP_NUM_THREADS`` for the processes it starts) and, without CUDA, DeepSpeed's CPU accelerator (named, it
    prints no fallback warning into ``--print_config``'s YAML). Called by :func:`main` and by the tests' conftest."""
    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)
    from datamodules.loading import record_thread_choice

    record_thread_choice()
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def main(argv: list[str] | None = None) -> None:
    """The ``lit_bvllm`` console script: set up the process, then parse and run (:func:`lit_bvllm.cli.commands.run`).
    Importing this package changes nothing."""
    setup_process()
    from lit_bvllm.cli.commands import run

    run(argv)

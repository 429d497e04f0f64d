"""Run directories: each run gets its own unless the user names one; a named one that holds a run is refused
(``--overwrite true`` replaces it, ``fit --ckpt_path`` from inside it resumes there), before anything is written."""

import json
import pathlib

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lit_bvllm.cli import main
from lit_bvllm.cli.commands import LAUNCHER_RANKS, claim_run_dir, lightning_cli, weights_name

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def repo_root(monkeypatch):
    monkeypatch.chdir(REPO)
    for key in LAUNCHER_RANKS:  # this process is the first one, whatever launched pytest
        monkeypatch.delenv(key, raising=False)


def trainer(save_dir, version, logger=TensorBoardLogger) -> L.Trainer:
    return L.Trainer(logger=logger(save_dir, name="eval_x", version=version), enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)


def earlier_run(run: pathlib.Path) -> pathlib.Path:
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    (run / "x_results.json").write_text("{}")
    return run


def test_an_unnamed_version_is_a_new_directory(tmp_path):
    earlier_run(tmp_path / "eval_x" / "version_0")
    assert claim_run_dir(trainer(tmp_path, None), "test", None, False) == tmp_path / "eval_x" / "version_1"


@pytest.mark.parametrize("logger", [TensorBoardLogger, CSVLogger])
@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_a_named_directory_that_holds_a_run_is_refused(tmp_path, command, logger):
    run = earlier_run(tmp_path / "eval_x" / "tiny")
    with pytest.raises(FileExistsError) as err:
        claim_run_dir(trainer(tmp_path, "tiny", logger), command, None, False)
    message = str(err.value)
    assert str(run) in message and "checkpoints, x_results.json" in message
    assert "--overwrite true" in message and "--trainer.logger.init_args.version" in message
    assert (run / "x_results.json").is_file()  # nothing touched


def test_a_named_empty_or_new_directory_is_fine(tmp_path):
    assert claim_run_dir(trainer(tmp_path, "new"), "test", None, False) == tmp_path / "eval_x" / "new"
    (tmp_path / "eval_x" / "empty").mkdir(parents=True)
    assert claim_run_dir(trainer(tmp_path, "empty"), "test", None, False) == tmp_path / "eval_x" / "empty"


def test_overwrite_deletes_the_earlier_run_first(tmp_path, capsys):
    run = earlier_run(tmp_path / "eval_x" / "tiny")
    (tmp_path / "eval_x" / "other").mkdir()
    assert claim_run_dir(trainer(tmp_path, "tiny"), "test", None, True) == run
    assert not run.exists() and (tmp_path / "eval_x" / "other").is_dir()  # no stale file of the old run is left
    assert f"deleted the earlier run in {run}" in capsys.readouterr().err


def test_only_the_first_process_deletes(tmp_path, monkeypatch):
    run = earlier_run(tmp_path / "eval_x" / "tiny")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert claim_run_dir(trainer(tmp_path, "tiny"), "test", None, True) == run
    assert (run / "x_results.json").is_file()


def test_overwrite_never_deletes_a_folder_that_is_not_a_runs_own(tmp_path, monkeypatch):
    run = earlier_run(tmp_path / "eval_x" / "tiny")
    monkeypatch.chdir(run / "checkpoints")
    with pytest.raises(ValueError, match="not a run's own folder"):
        claim_run_dir(trainer(tmp_path, "tiny"), "test", None, True)
    assert (run / "x_results.json").is_file()


def test_fit_resumes_in_its_own_directory(tmp_path):
    run = earlier_run(tmp_path / "eval_x" / "tiny")
    ckpt = str(run / "checkpoints" / "last.ckpt")
    for path in (ckpt, "last"):
        assert claim_run_dir(trainer(tmp_path, "tiny"), "fit", path, False) == run
    assert (run / "x_results.json").is_file()
    with pytest.raises(FileExistsError):  # a test of that checkpoint writes its results elsewhere
        claim_run_dir(trainer(tmp_path, "tiny"), "test", ckpt, False)
    with pytest.raises(FileExistsError):  # a checkpoint from another run is no resume of this one
        claim_run_dir(trainer(tmp_path, "tiny"), "fit", str(tmp_path / "elsewhere.ckpt"), False)
    with pytest.raises(ValueError, match="holds the checkpoint this fit reads"):
        claim_run_dir(trainer(tmp_path, "tiny"), "fit", ckpt, True)
    # nor may a test, validate or predict of that checkpoint delete it: the refusal suggested --overwrite, and
    # following it deleted the trained run
    for command in ("test", "validate", "predict"):
        with pytest.raises(FileExistsError) as err:
            claim_run_dir(trainer(tmp_path, "tiny"), command, ckpt, False)
        assert "--overwrite" not in str(err.value)
        with pytest.raises(ValueError, match=f"holds the checkpoint this {command} reads"):
            claim_run_dir(trainer(tmp_path, "tiny"), command, ckpt, True)
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_a_linked_data_flag_is_refused_from_the_console_script(monkeypatch):
    """The console script lets LightningCLI read sys.argv (DDP's launcher re-runs it); the linked-flag check read only
    ``args`` and let ``--data.tokenizer`` through, silently overridden by the link."""
    import sys

    from lit_bvllm.cli.commands import VideoCLI

    monkeypatch.setattr(sys, "argv", ["lit_bvllm", "fit", "--data.init_args.tokenizer", "/elsewhere"])
    cli = VideoCLI.__new__(VideoCLI)
    with pytest.raises(ValueError, match="--data.init_args.tokenizer is set from --model"):
        cli.parse_arguments(None, None)


def test_without_a_versioned_logger_nothing_is_checked(tmp_path):
    t = L.Trainer(logger=False, default_root_dir=tmp_path, enable_checkpointing=False)
    earlier_run(tmp_path)
    assert claim_run_dir(t, "test", None, True) is None and (tmp_path / "x_results.json").is_file()


def test_an_evaluation_is_named_after_the_weights_it_evaluates(tiny, tmp_path):
    """Results went to runs/eval_<benchmark>/version_N, a folder that says nothing of the checkpoint evaluated."""
    assert weights_name("runs/finetune/tiny/checkpoints/last.ckpt", None) == "finetune-tiny-last"
    assert weights_name("/ckpt/stage 2/epoch=1.ckpt", None) == "stage-2-epoch-1"
    assert weights_name(None, {"weights": "/exports/bvllm_7b/", "llm": "/ckpt/Qwen2"}) == "bvllm_7b"
    assert weights_name(None, {"weights": None, "llm": "/ckpt/Qwen2-7B-Instruct"}) == "Qwen2-7B-Instruct"
    assert weights_name("best", {"llm": "/ckpt/Qwen2"}) is None  # Lightning's own name: version_N as before
    configs = ["pretrain.yaml", "finetune.yaml", "eval/base.yaml", "eval/needle.yaml"]
    args = [a for c in configs for a in ("--config", f"experiments/{c}")]
    args += [*tiny["flags"], "--model.init_from", "null", "--trainer.logger.init_args.save_dir", str(tmp_path)]
    ckpt = "runs/finetune/tiny/checkpoints/last.ckpt"
    assert lightning_cli(args, run=False, weights=ckpt).trainer.log_dir == str(tmp_path / "eval_needle" /
                                                                                 "finetune-tiny-last")
    earlier_run(tmp_path / "eval_needle" / "finetune-tiny-last")
    assert lightning_cli(args, run=False, weights=ckpt).trainer.log_dir == str(tmp_path / "eval_needle" /
                                                                                 "finetune-tiny-last_2")
    llm = pathlib.Path(tiny["flags"][tiny["flags"].index("--model.llm") + 1]).name
    assert lightning_cli(args, run=False, weights="").trainer.log_dir == str(tmp_path / "eval_needle" / llm)
    named = lightning_cli(args + ["--trainer.logger.init_args.version", "mine"], run=False, weights=ckpt)
    assert named.trainer.log_dir == str(tmp_path / "eval_needle" / "mine")  # a name the user gives is kept


def test_the_eval_configs_give_each_run_a_new_version(tiny, tmp_path):
    """eval/base.yaml pinned version "tiny": a second checkpoint's evaluation went into the first one's folder."""
    configs = ["pretrain.yaml", "finetune.yaml", "eval/base.yaml", "eval/needle.yaml"]
    args = [a for c in configs for a in ("--config", f"experiments/{c}")]
    args += [*tiny["flags"], "--model.init_from", "null",
             "--trainer.logger.init_args.save_dir", str(tmp_path)]
    earlier_run(tmp_path / "eval_needle" / "version_0")
    assert lightning_cli(args, run=False).trainer.log_dir == str(tmp_path / "eval_needle" / "version_1")
    named = lightning_cli(args + ["--trainer.logger.init_args.version", "mine"], run=False)
    assert named.trainer.log_dir == str(tmp_path / "eval_needle" / "mine")
    assert lightning_cli(["--config", "experiments/pretrain.yaml", "--config", "experiments/finetune.yaml",
                          *tiny["flags"]],
                         run=False).trainer.log_dir == "runs/finetune/tiny"  # the eval configs' --ckpt_path


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_overwrite_is_in_the_help(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "--overwrite" in out and "delete it first" in out


def test_a_second_test_run_is_refused_before_it_writes_and_overwrite_replaces_it(tiny, synthetic, tmp_path, capsys):
    configs = ["pretrain.yaml", "eval/base.yaml", "eval/msvd_qa.yaml"]
    base = ["test", *[a for c in configs for a in ("--config", f"experiments/{c}")],
            *tiny["flags"], "--model.max_new_tokens", "2",
            "--data.benchmark.root", str(synthetic / "eval" / "msvd"), "--data.limit", "2", "--data.num_workers", "0",
            "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.logger.init_args.version", "tiny",
            "--trainer.enable_progress_bar", "false"]
    run = tmp_path / "eval_msvd_qa" / "tiny"
    main(base)
    assert json.loads((run / "msvd_qa_results.json").read_text())["evaluated"] == 2
    assert f"msvd_qa results: {run / 'msvd_qa_results.json'}" in capsys.readouterr().out  # the path, said at the end
    (run / "stale_from_the_old_run.txt").write_text("old")
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with pytest.raises(FileExistsError, match=rf"run directory {run} already holds a run .*--overwrite true"):
        main(base)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # not a byte written, config.yaml kept
    main(base + ["--overwrite", "true"])
    assert not (run / "stale_from_the_old_run.txt").exists() and not (run / "config.1.yaml").exists()
    assert (run / "msvd_qa_results.json").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["overwrite"] is False  # a replay never deletes a run


def test_fit_refuses_a_rerun_resumes_in_place_and_overwrite_starts_afresh(tiny, synthetic, tmp_path):
    base = ["fit", "--config", "experiments/pretrain.yaml", *tiny["flags"],
            "--data.train", str(synthetic / "pretrain.json"), "--data.num_workers", "0",
            "--data.batch_size", "2", "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    run = tmp_path / "pretrain" / "tiny"
    ckpt = run / "checkpoints" / "last.ckpt"
    main([*base, "--trainer.max_steps", "1"])
    with pytest.raises(FileExistsError, match=rf"fit --ckpt_path {ckpt}"):
        main([*base, "--trainer.max_steps", "2"])
    with pytest.warns(UserWarning, match="kept as config.1.yaml"):  # the snapshot keeps the first config
        main([*base, "--trainer.max_steps", "2", "--ckpt_path", str(ckpt)])
    assert torch.load(ckpt, weights_only=True)["global_step"] == 2
    assert "max_steps: 1" in (run / "config.1.yaml").read_text()
    main([*base, "--trainer.max_steps", "1", "--overwrite", "true"])
    assert torch.load(ckpt, weights_only=True)["global_step"] == 1 and not (run / "config.1.yaml").exists()
    assert "max_steps: 1" in (run / "config.yaml").read_text()


def test_a_failed_start_leaves_nothing_that_blocks_its_retry(tiny, synthetic, tmp_path):
    """A fit that fails before its first step (here the LLM folder is missing) removes the run directory its logger
    had begun: the retry under the same name needs no --overwrite (it was refused: 'already holds a run')."""
    base = ["fit", "--config", "experiments/pretrain.yaml", *tiny["flags"],
            "--data.train", str(synthetic / "pretrain.json"), "--data.num_workers", "0", "--data.batch_size", "2",
            "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.max_steps", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    run = tmp_path / "pretrain" / "tiny"
    missing = base + ["--model.llm", str(tmp_path / "no_llm")]
    with pytest.raises(FileNotFoundError, match="no_llm"):
        main(missing)
    assert not run.exists() or not any(run.iterdir())
    main(base)  # the same name, no --overwrite
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_a_failed_start_never_deletes_results(tmp_path):
    from lit_bvllm.cli.commands import remove_failed_start

    run = earlier_run(tmp_path / "run")
    (run / "events.out.tfevents.1.vm").write_bytes(b"x" * 88)
    assert not remove_failed_start(run) and (run / "checkpoints" / "last.ckpt").is_file()
    only_logs = tmp_path / "only_logs"
    only_logs.mkdir()
    (only_logs / "events.out.tfevents.1.vm").write_bytes(b"x" * 88)
    (only_logs / "hparams.yaml").write_text("{}")
    assert remove_failed_start(only_logs) and not only_logs.exists()


def test_a_run_without_a_terminal_writes_its_progress_in_plain_lines(tiny, synthetic, tmp_path, capsys):
    """stdout redirected (a SLURM log): fit writes a line every tenth of its steps, with step, loss, samples/s and ETA
    (it printed one line, at the end); test its batches. The epoch reads 'Epoch 0', not 'Epoch 0/-2'."""
    import re

    from lit_bvllm.training.callbacks import ProgressBar

    base = ["--config", "experiments/pretrain.yaml", *tiny["flags"], "--data.train", str(synthetic / "pretrain.json"),
            "--data.num_workers", "0", "--data.batch_size", "2", "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.enable_model_summary", "false"]
    main(["fit", *base, "--trainer.max_steps", "30"])
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("fit step")]
    assert len(lines) >= 3, lines
    assert re.fullmatch(r"fit step 30/30 \(100%\), loss \d+\.\d{4}, \d+\.\d samples/s, 0:\d\d:\d\d elapsed, "
                        r"ETA 0:00:00", lines[-1]), lines[-1]
    bar = ProgressBar()
    bar._trainer = type("T", (), {"max_epochs": -1})()
    assert bar._get_train_description(0).strip() == "Epoch 0"
    bar._trainer.max_epochs = 3
    assert bar._get_train_description(1).strip() == "Epoch 1/2"


def test_a_training_run_logs_its_gradient_norm_throughput_and_memory(tiny, synthetic, tmp_path):
    """TensorBoard had the loss, learning rates, τ and visual tokens; now also the gradient norm, samples/s and
    tokens/s, and the peak memory, every log_every_n_steps."""
    cli = lightning_cli(["fit", "--config", "experiments/pretrain.yaml", *tiny["flags"],
                         "--data.train", str(synthetic / "pretrain.json"), "--data.num_workers", "0",
                         "--data.batch_size", "2", "--trainer.logger.init_args.save_dir", str(tmp_path),
                         "--trainer.max_steps", "4", "--trainer.log_every_n_steps", "2",
                         "--trainer.enable_progress_bar", "false"])
    m = cli.trainer.callback_metrics
    for key in ("train/grad_norm", "train/samples_per_s", "train/tokens_per_s", "train/peak_memory_gib"):
        assert key in m and torch.isfinite(m[key]) and float(m[key]) > 0, key
    assert float(m["train/tokens_per_s"]) > float(m["train/samples_per_s"])  # many tokens a sample

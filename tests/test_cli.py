"""The lit_bvllm command: make-tiny, make-synthetic, scan and preview through the one real argument parser."""

import json
import subprocess
import sys

import pytest

from lit_bvllm.cli import main


def test_make_commands_accept_dashed_flags(tmp_path, capsys):
    main(["make-synthetic", "--out", str(tmp_path / "syn"), "--num-videos", "2", "--num-eval-videos", "1",
          "--max-duration", "9", "--seed", "5"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["videos"] == 2 and (tmp_path / "syn" / "finetune.json").is_file()
    main(["make-tiny", "--out", str(tmp_path / "tiny"), "--lm-steps", "2", "--clip-steps", "2",
          "--clip-batch-size", "8", "--clip-frames", "64", "--copy-steps", "0", "--qformer-steps", "0",
          "--qformer-frames", "64", "--llm-width", "64", "--num-layers", "2"])
    out = capsys.readouterr().out
    assert "tiny CLIP step     1: contrastive" in out  # the tower's losses are printed as it trains
    paths = json.loads(out[out.index("\n{") + 1:])
    assert (tmp_path / "tiny" / "llm" / "tokenizer.json").is_file() and paths["vision"].endswith("vision")


def test_importing_the_cli_changes_nothing_and_main_sets_the_process_up():
    """Importing ``lit_bvllm.cli`` leaves the environment as it was (it set four variables and recorded a thread
    choice at import); the process setup runs in ``main`` (here ``setup_process``, which ``main`` calls first), keeps
    what the user set and names every default once."""
    code = ("import os, json; e = dict(os.environ); import lit_bvllm.cli as c; assert dict(os.environ) == e, "
            "sorted(set(os.environ.items()) ^ set(e.items())); c.setup_process(); "
            "print(json.dumps({k: os.environ.get(k) "
            "for k in [*c.OFFLINE, 'LIT_BVLLM_THREADS_CHOSEN', 'DS_ACCELERATOR']}))")
    clean = {k: v for k, v in __import__("os").environ.items()
             if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "TOKENIZERS_PARALLELISM",
                          "LIT_BVLLM_THREADS_CHOSEN", "DS_ACCELERATOR", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**clean, "TOKENIZERS_PARALLELISM": "true"})
    assert out.returncode == 0, out.stderr[-2000:]
    env = json.loads(out.stdout)
    assert env == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                   "TOKENIZERS_PARALLELISM": "true",  # the user's
                   "LIT_BVLLM_THREADS_CHOSEN": "0",
                   "DS_ACCELERATOR": None if __import__("torch").cuda.is_available() else "cpu"}


@pytest.fixture(autouse=True)
def repo_root(monkeypatch):
    import pathlib

    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])


def _config(tiny, train):
    """The training config itself (scan and preview read what fit reads), on the test's backbones and data."""
    return ["--config", "experiments/pretrain.yaml", "--config", "experiments/finetune.yaml", *tiny["flags"],
            "--data.train", str(train), "--data.max_length", "256",
            "--data.max_frames", "8", "--data.num_workers", "0"]


def test_scan_and_preview_from_a_config(tiny, synthetic, tmp_path, capsys):
    entries = json.loads((synthetic / "finetune.json").read_text())
    bad = next(i for i, e in enumerate(entries) if "video" in e)
    entries[bad]["video"] = "videos/nope.mp4"
    ann = synthetic / "finetune_one_bad.json"
    ann.write_text(json.dumps(entries))
    cfg = _config(tiny, ann)
    main(["scan", *cfg, "--out", str(tmp_path / "scan.json")])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "scan.json").read_text())
    assert report["bad"] == 1 and report["counts"] == {"missing_file": 1} and report["bad_entries"][0]["index"] == bad
    assert f"--data.blocklist={tmp_path / 'scan.json'}" in out

    main(["preview", *cfg, "--data.blocklist", str(tmp_path / "scan.json"), "--num-samples", "3"])
    out = capsys.readouterr().out
    assert f"train set: {len(entries) - 1} samples" in out
    assert "frames         (3, " in out and "[[" in out and "<|im_end|>" in out
    assert "skipped entries in this batch: 0" in out


def test_a_symlinked_media_folder_scans_and_trains_with_no_bad_entry(tiny, synthetic, tmp_path, capsys):
    """An annotation folder whose videos/ and images/ are symlinks to another disk (usual on a cluster): the scan
    finds 0 bad entries (it found every one a path_escape) and a fit reads them, skipping none."""
    data = tmp_path / "annotations"
    data.mkdir()
    for media in ("videos", "images"):
        (data / media).symlink_to(synthetic / media, target_is_directory=True)
    entries = json.loads((synthetic / "finetune.json").read_text())[:24]
    (data / "train.json").write_text(json.dumps(entries))
    cfg = _config(tiny, data / "train.json")
    main(["scan", *cfg, "--out", str(tmp_path / "scan.json")])
    report = json.loads((tmp_path / "scan.json").read_text())
    assert report["bad"] == 0 and report["entries"] >= 20, report["counts"]  # the media entries of the 24
    from lit_bvllm.cli.commands import scan_hint

    hint = scan_hint({"entries": 24, "counts": {"path_escape": 20, "missing_file": 1}})
    assert hint.startswith("20 of 24 entries are path_escape") and "--data.allow_outside_root true" in hint
    assert scan_hint({"entries": 24, "counts": {"path_escape": 3}}) is None  # a few: the blocklist is the answer
    from datamodules import SkippedSamplesLogger
    from lit_bvllm.cli.commands import lightning_cli

    cli = lightning_cli(["fit", *cfg, "--model.init_from", "null", "--trainer.max_steps", "6", "--data.batch_size",
                         "4", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])
    assert cli.trainer.global_step == 6  # every training sample read once
    skipped = next(c for c in cli.trainer.callbacks if isinstance(c, SkippedSamplesLogger))
    assert skipped.seen == {} and float(cli.trainer.callback_metrics["data/skipped"]) == 0.0


def test_strict_flag_from_the_command_line(tiny, synthetic, tmp_path):
    from datamodules.errors import DataError

    entries = json.loads((synthetic / "finetune.json").read_text())
    for e in entries:
        e.pop("video", None), e.pop("image", None)
        e["conversations"][0]["value"] = "<video>" + e["conversations"][0]["value"]
    ann = synthetic / "finetune_all_bad.json"
    ann.write_text(json.dumps(entries))
    with pytest.raises(DataError, match="extra_tag"):
        main(["preview", *_config(tiny, ann), "--data.strict", "true"])


def test_one_parser_holds_every_command_and_the_docs_name_each():
    """The parser's subcommands are Lightning's four and the suite's, each documented in lit_bvllm.cli's list (it was
    a search of the help text for a few names; show-selection was missing from the list); a typo fails."""
    import re

    import lit_bvllm.cli
    from lit_bvllm.cli.commands import CONFIG_COMMANDS, SETUP

    out = subprocess.run([sys.executable, "-m", "lit_bvllm.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    commands = set(re.search(r"\{([a-z,-]+)\}", out).group(1).split(","))
    assert commands == {"fit", "validate", "test", "predict", *CONFIG_COMMANDS, *SETUP}
    documented = set(re.findall(r"^    lit_bvllm ([a-z-]+) ", lit_bvllm.cli.__doc__, re.M))
    assert documented == commands - {"validate", "test", "predict"}  # the fit line names those three
    bad = subprocess.run([sys.executable, "-m", "lit_bvllm.cli", "fitt"], capture_output=True, text=True)
    assert bad.returncode != 0 and "fitt" in bad.stderr


def test_export_reads_the_training_config(tiny, synthetic, tmp_path, capsys):
    """export parses the same configs as fit (the checkpoint's own hyperparameters on top) and writes a folder."""
    from lit_bvllm.export import load_exported

    base = _config(tiny, synthetic / "finetune.json") + ["--trainer.logger.init_args.save_dir", str(tmp_path),
                                                         "--model.init_from", "null", "--trainer.max_steps", "1",
                                                         "--trainer.enable_progress_bar", "false"]
    main(["fit", *base])
    ckpt = tmp_path / "finetune" / "tiny" / "checkpoints" / "last.ckpt"
    main(["export", *base, "--ckpt_path", str(ckpt), "--out", str(tmp_path / "export")])
    assert "trained tensors to" in capsys.readouterr().out
    model = load_exported(tmp_path / "export")
    assert (tmp_path / "export" / "adapter").is_dir() and model.config["reducer"]["class_path"].endswith("BVLLM")


def test_a_typo_is_a_short_error_naming_the_right_option():
    """A mistyped option: at most 5 lines, the closest valid option named, the usage left to --help (it printed 73
    lines of usage before the reason, and no suggestion)."""
    for typo, right in [("--model.reducer.init_args.num_frame", "--model.reducer.init_args.num_frames"),
                        ("--data.max_lenght", "--data.max_length"), ("--trainer.max_stepz", "--trainer.max_steps")]:
        out = subprocess.run([sys.executable, "-m", "lit_bvllm.cli", "fit", "--config", "experiments/pretrain.yaml",
                              typo, "3"], capture_output=True, text=True, timeout=120)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) <= 5, out.stderr
        assert lines[0].startswith("error: ") and f"did you mean {right}?" in lines, lines


@pytest.mark.parametrize("command, own", [
    ("show-selection", ["--video", "--question", "--options", "--needle_times"]),
    ("scan", ["--out", "--workers", "--decode"]), ("export", ["--out", "--merge_lora"]),
    ("preview", ["--num_samples"])])
def test_a_tooling_commands_help_lists_its_own_flags_first(command, own, capsys):
    """show-selection --help printed the 500 lines of trainer, model and data flags it shares with fit first and its
    own flags at lines 633-653; now a short usage naming them, then their group, then the rest."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"usage: lit_bvllm {command} [--config CONFIG ...]") and len(lines[0].split("] [")) < 12
    first_shared = out.index("--trainer.max_steps")
    for flag in own:
        assert f"[{flag} ...]" in lines[0] and out.index(f"  {flag} ") < first_shared, flag


def test_the_optimizer_is_the_modules_and_help_does_not_offer_another():
    """The module builds its optimizer (--model.lr, lr_llm, schedule); fit --help offered --optimizer, which failed
    inside the run with 'optimizer got an empty parameter list'. Now it is not an option at all."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "lit_bvllm.cli", "fit", *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=120)
    assert "--optimizer" not in run("--help").stdout
    bad = run("--config", "experiments/pretrain.yaml", "--optimizer", "AdamW")
    assert bad.returncode == 2 and "unrecognized arguments: --optimizer" in bad.stderr


def test_several_benchmarks_are_evaluated_with_one_model_load(tiny, synthetic, tmp_path, capsys, monkeypatch):
    """lit_bvllm evaluate: two benchmarks, the backbones loaded once (nine loads of a 7B model for the paper's Table
    1 before), each benchmark's results in its own run directory, and one table of both."""
    import pathlib

    import lit_bvllm.model as model_module

    repo = pathlib.Path(__file__).resolve().parents[1]
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "synthetic").symlink_to(synthetic, target_is_directory=True)  # the configs' roots
    (tmp_path / "experiments").symlink_to(repo / "experiments", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    loads = []
    real = model_module.load_llm
    monkeypatch.setattr(model_module, "load_llm", lambda *a, **k: loads.append(a) or real(*a, **k))
    pairs = dict(zip(tiny["flags"][::2], tiny["flags"][1::2]))
    flags = " ".join([*(f"{k[2:]}={v}" for k, v in pairs.items()), "data.limit=4", "data.num_workers=0",
                      "model.max_new_tokens=2", "trainer.enable_progress_bar=false", "model.init_from=null"])
    main(["evaluate", "--tasks", "vnbench,msvd_qa", "--flags", flags])
    assert len(loads) == 1  # one model for both benchmarks
    out = capsys.readouterr().out
    for name, folder in (("vnbench", "eval_vnbench"), ("msvd_qa", "eval_msvd_qa")):
        results = sorted((tmp_path / "runs" / folder).glob(f"*/{name}_results.json"))
        assert len(results) == 1 and json.loads(results[0].read_text())["evaluated"] >= 4
        assert f"{name} results: {results[0].relative_to(tmp_path)}" in out or str(results[0]) in out
    header = next(line for line in out.splitlines()[::-1] if "vnbench" in line and "msvd_qa" in line)
    assert header  # the side-by-side table, a column per benchmark, closes the output


def test_annotations_apart_from_their_media_name_the_media_folder(tiny, synthetic, tmp_path):
    """--data.media_root: an annotation file kept in another folder than its media (LLaVA's --video_folder) reads them
    from there; without it every entry is a missing file."""
    ann = tmp_path / "elsewhere" / "train.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps(json.loads((synthetic / "finetune.json").read_text())[:12]))
    main(["scan", *_config(tiny, ann), "--out", str(tmp_path / "without.json")])
    assert json.loads((tmp_path / "without.json").read_text())["counts"].get("missing_file", 0) >= 10
    main(["scan", *_config(tiny, ann), "--data.media_root", str(synthetic), "--out", str(tmp_path / "with.json")])
    report = json.loads((tmp_path / "with.json").read_text())
    assert report["bad"] == 0 and report["entries"] >= 10

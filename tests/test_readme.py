"""The README's commands, run: every ``lit_bvllm`` command it shows parses (``--print_config``, or its own flags for
the setup commands), and the "Your own data and checkpoints" steps run as written on a copy of the synthetic set laid
out as a user's would be, with nothing of the project edited."""

import inspect
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from lit_bvllm.cli import main
from lit_bvllm.cli.commands import CONFIG_COMMANDS, SETUP

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RUN_CONFIG = ("fit", "validate", "test", "predict", *CONFIG_COMMANDS)


def commands(text: str) -> list[list[str]]:
    """Each ``lit_bvllm`` command of the text's ``bash`` blocks as argv after ``lit_bvllm`` (continued lines joined,
    comments dropped, a block's ``NAME="..."`` variables substituted, ``[optional]`` parts kept without brackets)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        variables, pending = {}, ""
        for line in block.replace("\\\n", " ").splitlines():
            try:
                tokens = shlex.split(pending + line, comments=True)
                pending = ""
            except ValueError:  # a quoted value goes on on the next line
                pending += line + " "
                continue
            if len(tokens) == 1 and re.fullmatch(r"[A-Z_]+=.*", tokens[0]):
                name, value = tokens[0].split("=", 1)
                variables[name] = shlex.split(value)
                continue
            tokens = [t for tok in tokens for t in (variables.get(tok[1:], [tok]) if tok.startswith("$") else [tok])]
            at = [i for i, t in enumerate(tokens) if t.endswith("lit_bvllm") and i + 1 < len(tokens)]
            if at:
                argv, optional = [], False
                for t in tokens[at[0] + 1:]:
                    if t.startswith("[--"):  # "[--merge_lora true]": an optional part, shown in brackets
                        t, optional = t[1:], True
                    if optional and t.endswith("]"):
                        t, optional = t[:-1], False
                    argv.append(t)
                out.append(argv)
    return out


def section(title: str) -> str:
    text = README[README.index(f"\n{title}\n"):]
    return text[:text.index("\n## ", 1)]


def test_the_readme_commands_are_found():
    found = commands(README)
    assert len(found) >= 25 and {"fit", "test", "evaluate", "scan", "preview", "export", "show-selection",
                                 "make-tiny", "make-synthetic"} <= {c[0] for c in found}
    selection = next(c for c in found if c[0] == "show-selection")
    assert json.loads(selection[selection.index("--options") + 1])[0] == "a blue triangle"  # brackets of a value kept
    own = commands(section("## Your own data and checkpoints"))
    assert [c[0] for c in own] == ["scan", "preview", "fit", "fit", "evaluate"]
    # the SLURM script's variables are substituted: the stage-2 command composes the backbone and reducer files
    stage2 = next(c for c in found if "experiments/recipes/paper_stage2.yaml" in c)
    assert "experiments/backbones/qwen2_7b_instructblip.yaml" in stage2


@pytest.mark.parametrize("argv", commands(README), ids=lambda a: " ".join(a)[:80])
def test_every_readme_command_parses(argv, capsys, monkeypatch):
    """A run-config command prints its merged config (``--print_config``: no model loads, nothing runs); a setup
    command names only its function's arguments."""
    monkeypatch.chdir(ROOT)
    command = argv[0]
    if command in SETUP:
        params = set(inspect.signature(SETUP[command]).parameters)
        flags = {a[2:].split("=", 1)[0].replace("-", "_") for a in argv[1:] if a.startswith("--")}
        assert flags <= params, f"{command}: {sorted(flags - params)} not among {sorted(params)}"
        return
    assert command in RUN_CONFIG, command
    exported = "artifacts/export/model.yaml" in argv  # written by the README's export command: not on a clone
    if exported:
        i = argv.index("artifacts/export/model.yaml")
        argv = argv[:i - 1] + argv[i + 1:]
    with pytest.raises(SystemExit) as done:
        main([*argv, "--print_config"])
    assert done.value.code in (0, None), capsys.readouterr().err[-2000:]
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (exported or printed["model"]["llm"]) and printed["data"]["class_path"].startswith("datamodules.")


def test_your_own_data_steps_run_as_written(tiny, tmp_path, monkeypatch, capsys):
    """A fresh clone after `make demo` (the project's experiments/ and make-tiny's backbones under artifacts/),
    and a user's data: annotations in one folder, media in another whose videos/ is a symlink to another disk. The
    README's steps run as written; only test-speed flags are added (steps, batch, workers, items)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lit_bvllm.world import make_synthetic

    home = tmp_path / "clone"
    (home / "artifacts").mkdir(parents=True)
    (home / "experiments").symlink_to(ROOT / "experiments")
    (home / "artifacts" / "tiny").symlink_to(Path(tiny["llm"]).parent)
    source = tmp_path / "source"  # what make-synthetic writes stands in for the user's files and the benchmarks
    make_synthetic(source, seed=0, num_videos=3, num_eval_videos=2, max_duration=8, num_val_videos=2)
    (home / "artifacts" / "synthetic").symlink_to(source)
    (home / "my_set").mkdir()
    for name, target in [("pretrain.json", "captions.json"), ("finetune.json", "train.json"),
                         ("finetune_val.json", "val.json")]:
        shutil.copyfile(source / name, home / "my_set" / target)
    disk = tmp_path / "other_disk" / "videos"
    shutil.copytree(source / "videos", disk)
    (home / "my_media").mkdir()
    (home / "my_media" / "videos").symlink_to(disk)
    shutil.copytree(source / "images", home / "my_media" / "images")
    before = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "experiments").rglob("*"))

    fast = {"scan": ["--workers", "1"],
            "preview": ["--data.num_workers", "0", "--data.batch_size", "2"],
            "fit": ["--trainer.max_steps", "2", "--data.batch_size", "2", "--data.num_workers", "0",
                    "--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "1",
                    "--trainer.val_check_interval", "1"],
            "evaluate": ["--flags", "data.limit=4 data.num_workers=0 trainer.enable_progress_bar=false"]}
    monkeypatch.chdir(home)
    for argv in commands(section("## Your own data and checkpoints")):
        main([*argv, *fast[argv[0]]])

    scan = json.loads((home / "my_set" / "scan.json").read_text())
    assert scan["bad"] == 0 and scan["entries"] == len(json.loads((home / "my_set" / "train.json").read_text()))
    assert scan["entries"] > 0  # the symlinked videos were read, none refused
    assert "skipped entries in this batch: 0" in capsys.readouterr().out  # preview
    stage2 = home / "runs" / "finetune" / "mine"
    assert (home / "runs" / "pretrain" / "mine" / "checkpoints" / "last.ckpt").is_file()
    assert (stage2 / "checkpoints" / "last.ckpt").is_file()
    assert EventAccumulator(str(stage2)).Reload().Scalars("val/loss")  # the held-out conversations were scored
    for bench, results in [("needle", "vnbench"), ("mvbench", "mvbench")]:
        result = json.loads((home / "runs" / f"eval_{bench}" / "finetune-mine-last" / f"{results}_results.json")
                            .read_text())
        assert result["evaluated"] >= 4 and result["evaluated_weights"]
    assert sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "experiments").rglob("*")) == before

"""Adding a benchmark is one module and one YAML: a benchmark written outside the package, selected by class_path,
runs through the real CLI, data module and evaluator with no registry to edit."""

import json
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# What a newcomer writes: one module, a subclass of the multiple-choice base with a reader and a prompt.
MODULE = '''
"""Colour quiz: which shape did the video show? (a toy benchmark over one JSON file)"""

import json
from pathlib import Path

from datamodules.benchmarks import EvalItem, MultipleChoiceBenchmark


class ColourQuiz(MultipleChoiceBenchmark):
    """Reads ``<root>/<annotation>``: ``[{id, video (relative to root), question, options, answer (text), kind}]``."""

    name = "colour_quiz"

    def __init__(self, root: str, annotation: str = "quiz.json", fallback_letter: str | None = None):
        super().__init__(root, fallback_letter=fallback_letter)
        self.annotation = annotation

    def read(self) -> list[EvalItem]:
        entries = json.loads((Path(self.root) / self.annotation).read_text())
        root = Path(self.root)
        return [EvalItem(id=e["id"], video=str(root / e["video"]), question=e["question"], options=e["options"],
                         answer=e["options"].index(e["answer"]), category=e["kind"]) for e in entries]

    def template(self, question: str, options: list[str]) -> str:
        lines = "".join(f"{chr(65 + k)}) {o}\\n" for k, o in enumerate(options))
        return f"Colour quiz. {question}\\n{lines}Reply with one letter."
'''

# ... and one short YAML, composed after the shared experiments/eval/base.yaml.
CONFIG = """
trainer:
  logger:
    init_args:
      save_dir: {save_dir}
      name: eval_colour_quiz
data:
  init_args:
    benchmark:
      class_path: colour_quiz.ColourQuiz
      init_args:
        root: {root}
    batch_size: 2
    num_workers: 0
"""


@pytest.fixture
def quiz(tmp_path, synthetic, monkeypatch):
    """The module on sys.path, its annotation file over two synthetic eval videos, its YAML."""
    (tmp_path / "colour_quiz.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "quiz" / "videos").mkdir(parents=True)
    videos = []  # the media inside the benchmark's root, as a benchmark ships them (media outside it are refused)
    for src in sorted((synthetic / "eval" / "vnbench" / "videos").glob("*.mp4"))[:2]:
        (tmp_path / "quiz" / "videos" / src.name).hardlink_to(src)
        videos.append(f"videos/{src.name}")
    entries = [
        {"id": "q0", "video": videos[0], "question": "Which shape is red?", "options": ["ring", "star", "cross"],
         "answer": "star", "kind": "shape"},
        {"id": "q1", "video": videos[0], "question": "What colour is the ring?", "options": ["red", "blue"],
         "answer": "red", "kind": "colour"},
        {"id": "q2", "video": videos[1], "question": "What colour is the star?", "options": ["cyan", "green"],
         "answer": "green", "kind": "colour"},
    ]
    (tmp_path / "quiz" / "quiz.json").write_text(json.dumps(entries))
    config = tmp_path / "colour_quiz.yaml"
    config.write_text(CONFIG.format(save_dir=tmp_path / "runs", root=tmp_path / "quiz"))
    return config


def test_a_benchmark_outside_the_package_runs_by_class_path(quiz, tiny, tmp_path, monkeypatch):
    from lit_bvllm.cli.commands import lightning_cli

    monkeypatch.chdir(REPO)
    cli = lightning_cli(["--config", "experiments/pretrain.yaml", "--config", "experiments/eval/base.yaml",
                         "--config", str(quiz), *tiny["flags"],
                         "--model.max_new_tokens", "2", "--trainer.enable_progress_bar", "false"], run=False)
    dm = cli.datamodule
    assert type(dm.benchmark).__module__ == "colour_quiz" and dm.name == "colour_quiz"
    assert dm.hparams.mode == "generate" and dm.hparams.max_frames == 128  # base.yaml's shared settings

    dm.setup("test")
    assert [it.id for it in dm.items] == ["q0", "q1", "q2"] and dm.items[1].options == ["red", "blue"]
    batch = next(iter(dm.test_dataloader()))
    assert batch["index"].tolist() == [0, 1] and batch["frames"].shape[0] > 0
    want = "Colour quiz. Which shape is red?\nA) ring\nB) star\nC) cross\nReply with one letter."
    assert batch["meta"][0]["prompt"] == want
    assert want in dm.tokenizer.decode(batch["input_ids"][0])  # in the chat template, after the video placeholder

    # the evaluator scores planted answers with the base class's parse rule and aggregates per category
    ev = dm.evaluator
    metric = ev.new_metric()
    second = next(b for k, b in enumerate(dm.test_dataloader()) if k == 1)
    for b, answers in ((batch, ["The answer is B.", "(B)"]), (second, ["green"])):
        records, update = ev.score(b, answers)
        metric.update(**update)
    result = ev.aggregate(metric.compute(), [])
    assert result["benchmark"] == "colour_quiz" and (result["evaluated"], result["missing"]) == (3, 0)
    assert result["accuracy"] == pytest.approx(2 / 3)  # q0 right (B), q1 wrong (blue), q2 right (option text)
    assert result["per_category"] == {"colour": 0.5, "shape": 1.0}
    assert result["chance"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert ev.describe(2)["prompt"] == textwrap.dedent("""\
        Colour quiz. {question}
        A) {option A}
        B) {option B}
        Reply with one letter.""")
    assert ev.describe(2)["parse_rule"] == "default" and ev.submission(records) is None

    # the model's test loop writes the results under the benchmark's name
    cli.trainer.test(cli.model, datamodule=dm)
    run = tmp_path / "runs" / "eval_colour_quiz" / "version_0"
    written = json.loads((run / "colour_quiz_results.json").read_text())
    assert (written["items"], written["evaluated"], written["errors"]) == (3, 3, 0)
    assert len((run / "colour_quiz_predictions.jsonl").read_text().splitlines()) == 3

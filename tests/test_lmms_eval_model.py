"""lit_bvllm as an lmms-eval model (lit_bvllm/lmms_eval_model.py), run by lmms-eval's own evaluator on local task YAMLs
over the synthetic needle set (no hub): its loglikelihood and generate_until answers are what the suite's evaluation
path gives on the same 8 items, and it registers through lmms-eval's entry point."""

import json
import os
import textwrap

import pytest
import torch
from helpers import needle_data

lmms_eval = pytest.importorskip("lmms_eval", reason="the [lmms] extra (make install installs it)")

UTILS = '''
from datamodules.benchmarks import VNBench
from datamodules.benchmarks.items import EvalItem


def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_choice(doc):
    return doc["options"]


def question(doc):
    return doc["question"]


def prompt(doc):  # the suite's VNBench prompt in generate mode, for the same user turn as `lit_bvllm test`
    item = EvalItem(id=doc["id"], video=doc["video"], question=doc["question"], options=doc["options"], answer=0)
    return VNBench("unused").prompt(item, None)


def answered(doc, results):
    return {"answered": float(bool(results[0].strip()))}
'''

TASKS = {
    "lit_bvllm_needle_mc": '''
        task: lit_bvllm_needle_mc
        dataset_path: json
        dataset_kwargs: {data_files: {test: docs.json}}
        test_split: test
        output_type: multiple_choice
        doc_to_visual: !function utils.doc_to_visual
        doc_to_text: !function utils.question
        doc_to_choice: !function utils.doc_to_choice
        doc_to_target: answer
        target_delimiter: ""
        metric_list:
          - {metric: acc, aggregation: mean, higher_is_better: true}
    ''',
    "lit_bvllm_needle_gen": '''
        task: lit_bvllm_needle_gen
        dataset_path: json
        dataset_kwargs: {data_files: {test: docs.json}}
        test_split: test
        output_type: generate_until
        doc_to_visual: !function utils.doc_to_visual
        doc_to_text: !function utils.prompt
        doc_to_target: answer
        generation_kwargs: {max_new_tokens: 4, until: []}
        process_results: !function utils.answered
        metric_list:
          - {metric: answered, aggregation: mean, higher_is_better: true}
    ''',
}


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, synthetic):
    """The synthetic needle set's first 8 items as an lmms-eval dataset (JSON) and two task YAMLs."""
    from datamodules.benchmarks import VNBench

    folder = tmp_path_factory.mktemp("lmms_tasks")
    items = VNBench(str(synthetic / "eval" / "vnbench")).read()[:8]
    docs = [{"id": it.id, "video": it.video, "question": it.question, "options": it.options, "answer": it.answer}
            for it in items]
    (folder / "docs.json").write_text(json.dumps(docs))
    (folder / "utils.py").write_text(UTILS)
    for name, text in TASKS.items():
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    return folder, items


def test_lmms_eval_scores_as_the_suites_evaluation_does(tiny, synthetic, tasks, monkeypatch):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from lit_bvllm.lmms_eval_model import LitBVLLM

    folder, items = tasks
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(os.path.dirname(os.path.dirname(__file__)))
    args = ("--config experiments/pretrain.yaml --config experiments/finetune.yaml --config experiments/eval/base.yaml "
            "--config experiments/eval/needle.yaml --model.reducer Uniform --model.reducer.init_args.num_frames 4 "
            f"--model.llm {tiny['llm']} --model.vision_tower {tiny['vision']} --data.num_workers 0")
    torch.manual_seed(0)
    lm = LitBVLLM(args=args, batch_size=3)
    model = lm.model  # lmms-eval deletes its model's modules when it is done (lmms.clean)
    seen = []  # the batches the adapter generates from: the same prompts and frames as the suite's
    generate = model.generate
    model.generate = lambda batch, **kw: seen.append(batch) or generate(batch, **kw)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    out = simple_evaluate(model=lm, tasks=list(TASKS), task_manager=manager, log_samples=True, batch_size=3)

    # the suite's own path over the same items: the data module `lit_bvllm test` builds, the same model
    want_scores, want_texts, want_batches = [], [], []
    for mode in ("likelihood", "generate"):
        dm = needle_data(tiny, synthetic, batch_size=3, mode=mode, limit=8, frame_mode="fps", fps=1.0, max_frames=128)
        with torch.no_grad():
            for batch in (dm.test_dataloader() if mode == "likelihood" else dm.predict_dataloader()):
                if mode == "likelihood":
                    scores, _ = model.option_scores(batch)
                    members = batch.get("members") or [[int(i)] for i in batch["index"]]
                    orders = batch.get("orders") or [[None] * len(m) for m in members]
                    for ms, os_, row in zip(members, orders, scores):  # as the evaluator reads a shared request
                        want_scores += [(m, (row if o is None else row[o]).tolist()) for m, o in zip(ms, os_)]
                else:
                    want_texts += generate(batch, max_new_tokens=4)
                    want_batches.append(batch)
    by_index = dict(want_scores)
    samples = {s["doc_id"]: s for s in out["samples"]["lit_bvllm_needle_mc"]}
    assert sorted(samples) == list(range(8))
    for i, item in enumerate(items):
        losses = [r[0][0] for r in samples[i]["resps"]]  # one (loss, greedy) per option
        want = by_index[i][: len(item.options)]
        assert losses == pytest.approx([-w for w in want], abs=1e-5), item.id
    gen = {s["doc_id"]: s["resps"][0][0] for s in out["samples"]["lit_bvllm_needle_gen"]}
    assert [gen[i] for i in range(8)] == want_texts[:8]

    def rows(batches):  # each item's prompt tokens and frames, unpadded, in a comparable form
        return sorted((tuple(b["input_ids"][r][b["attention_mask"][r].bool()].tolist()),
                       tuple(b["frames"][r][b["frame_mask"][r]].flatten()[::97].tolist()))
                      for b in batches for r in range(len(b["input_ids"])))

    assert rows(seen) == rows(want_batches)
    assert out["results"]["lit_bvllm_needle_mc"]["acc,none"] == pytest.approx(
        sum(int(torch.tensor(by_index[i][: len(it.options)]).argmax()) == it.answer for i, it in enumerate(items)) / 8)


def test_lmms_eval_finds_the_model_by_its_entry_point():
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    registry = ModelRegistryV2()
    registry.load_entrypoint_manifests()
    assert registry.get_manifest("lit_bvllm").simple_class_path == "lit_bvllm.lmms_eval_model.LitBVLLM"


def test_the_model_args_must_compose_an_evaluation_config(tiny):
    from lit_bvllm.lmms_eval_model import LitBVLLM

    args = f"--config experiments/pretrain.yaml --model.llm {tiny['llm']} --model.vision_tower {tiny['vision']}"
    with pytest.raises(ValueError, match="must compose an evaluation config"):
        LitBVLLM(args=args + f" --model.reducer.init_args.qformer {tiny['qformer']}")

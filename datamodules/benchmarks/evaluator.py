"""Scoring a benchmark: per-item records, metric states synced across ranks, and each benchmark's aggregation.

Per item, the model's output (a generation, or option scores in likelihood mode) becomes one record
(``predictions.jsonl``) and one update of :class:`ItemScores`, a torchmetrics metric whose states are vectors
indexed by the item's position in the benchmark. Summed over ranks, they show every item scored exactly once
(``duplicates`` and ``missing`` are counted, not assumed), and every aggregate is computed from them:

- multiple choice: accuracy overall and per category (task / task type / question type); Video-MME also per
  duration and domain, plus the official scorer's accuracy over answered items; VNBench: 4-way circular
  accuracy per type and their unweighted mean (VNBench ``eval.py``); unparsed answers are counted and count as
  wrong unless a fallback letter is set;
- open-ended: normalised exact match, token F1 and answer-contained, overall and per answer type, and the
  Video-ChatGPT judge's accuracy and score when a judge endpoint is configured.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor
from torchmetrics import Metric

from datamodules.benchmarks.items import EvalItem

OPEN_ENDED_METRICS = ("exact_match", "token_f1", "contains")


class ItemScores(Metric):
    """Per-item sums, synced by summing over ranks: ``seen``, ``correct``, ``parsed``, ``error`` ``(N,)`` and
    ``values`` ``(N, V)`` (open-ended metrics)."""

    full_state_update = False

    def __init__(self, num_items: int, num_values: int = 0):
        super().__init__()
        for name in ("seen", "correct", "parsed", "error"):
            self.add_state(name, torch.zeros(num_items, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("values", torch.zeros(num_items, num_values, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, index: Tensor, correct: Tensor, parsed: Tensor, error: Tensor, values: Tensor | None = None) -> None:
        index = index.to(self.seen.device)
        for state, v in ((self.seen, torch.ones_like(correct)), (self.correct, correct), (self.parsed, parsed),
                         (self.error, error)):
            state.index_add_(0, index, v.to(state))
        if values is not None and values.numel():
            self.values.index_add_(0, index, values.to(self.values))

    def compute(self) -> dict[str, Tensor]:
        return {"seen": self.seen, "correct": self.correct, "parsed": self.parsed, "error": self.error,
                "values": self.values}


class Evaluator:
    """Scores one benchmark's outputs and aggregates them the way the benchmark reports.

    Args:
        benchmark: benchmark name (prompt family and aggregation).
        items: the benchmark's items, in dataset order (``batch["index"]`` points into them).
        mode: ``generate`` or ``likelihood``.
        parse_rule: answer parser; None: the benchmark's reference rule
            (:data:`datamodules.benchmarks.parsing.REFERENCE_RULE`).
        fallback_letter: letter an unparsed answer gets (None: it counts as wrong).
        judge: keyword arguments of a :class:`~datamodules.benchmarks.judge.Judge` for open-ended answers, or None;
            its cache defaults to ``judge_cache.jsonl`` in the run dir.
        subtitles: whether prompts carry subtitles (recorded with the results).
        short_answer: whether open-ended prompts ask for a single word or phrase (recorded).
    """

    def __init__(self, benchmark: str, items: list[EvalItem], mode: str = "generate", parse_rule: str | None = None,
                 fallback_letter: str | None = None, judge: dict | None = None, subtitles: bool = False,
                 short_answer: bool = False):
        self.benchmark, self.items, self.mode = benchmark, items, mode
        from datamodules.benchmarks.parsing import REFERENCE_RULE

        self.parse_rule = parse_rule or REFERENCE_RULE.get(benchmark, "default")
        self.fallback_letter, self.judge = fallback_letter, judge
        self.subtitles, self.short_answer = subtitles, short_answer
        self.open_ended = not items[0].multiple_choice

    def new_metric(self) -> ItemScores:
        return ItemScores(len(self.items), len(OPEN_ENDED_METRICS) if self.open_ended else 0)

    # ------------------------------------------------------------------ per batch

    def score(self, batch: dict, output: list[str] | Tensor, info: dict | None = None) -> tuple[list[dict], dict[str, Tensor]]:
        """Records and metric updates for one batch: ``output`` is the generated texts or the option scores;
        ``info`` the reducer's (its ``kept_frames`` give the selection record of items with needle times)."""
        records = [self._record(int(i), meta, output[b]) for b, (i, meta) in enumerate(zip(batch["index"], batch["meta"]))]
        kept = (info or {}).get("kept_frames")
        if kept is not None:
            self._selection(batch, kept.cpu(), records)
        update = {
            "index": batch["index"].cpu(),
            "correct": torch.tensor([float(r.get("correct", False)) for r in records]),
            "parsed": torch.tensor([float(r.get("parsed", True)) for r in records]),
            "error": torch.tensor([float(r["error"] is not None) for r in records]),
        }
        if self.open_ended:
            update["values"] = torch.tensor([[r[k] for k in OPEN_ENDED_METRICS] for r in records], dtype=torch.float64)
        return records, update

    def _selection(self, batch: dict, kept: Tensor, records: list[dict]) -> None:
        """Add the kept frames and their hit / event recall (and the uniform control's) to the records of items
        that say where their needles are (``extra["needle_times"]``; :mod:`datamodules.benchmarks.selection`)."""
        from datamodules.benchmarks.selection import selection_record

        times, mask = batch["frame_times"].cpu(), batch["frame_mask"].cpu()
        for b, record in enumerate(records):
            spans = self.items[record["index"]].extra.get("needle_times")
            if spans is None or record["error"] is not None:
                continue
            picked = kept[b][kept[b] >= 0]
            record["selection"] = selection_record(times[b, picked].tolist(), times[b][mask[b]].tolist(), spans)

    def _record(self, index: int, meta: dict, out) -> dict:
        item = self.items[index]
        record = {"id": item.id, "index": index, "prompt": meta["prompt"], "error": meta["error"]}
        if self.open_ended:
            from datamodules.benchmarks.openended import contains, exact_match, token_f1

            pred = out.strip()
            ok = meta["error"] is None
            record.update(output=out, prediction=pred, answer=item.answer, **{
                name: float(fn(pred, item.answer)) if ok else 0.0
                for name, fn in zip(OPEN_ENDED_METRICS, (exact_match, token_f1, contains))})
            return record
        from datamodules.benchmarks.prompts import letters

        if self.mode == "likelihood":
            scores = out[: len(item.options)].float()
            pred, parsed, text = int(scores.argmax()), True, None
            record["scores"] = [round(float(s), 5) for s in scores]
        else:
            from datamodules.benchmarks.parsing import parse_choice

            text = out
            pred = parse_choice(out, item.options, self.parse_rule)
            parsed = pred is not None
            if pred is None and self.fallback_letter is not None:
                pred = letters(len(item.options)).index(self.fallback_letter)
        if meta["error"] is not None:  # no frames were seen: the item counts as wrong whatever the text says
            pred, parsed = None, False
        record.update(output=text, parsed=parsed, pred=pred,
                      letter=None if pred is None else letters(len(item.options))[pred], answer=item.answer,
                      correct=pred is not None and item.answer >= 0 and pred == item.answer)
        return record

    # ------------------------------------------------------------------ aggregation

    def aggregate(self, states: dict[str, Tensor], records: list[dict], out_dir=None) -> dict:
        """The benchmark's numbers from the synced states (and, for the judge and errors, the gathered records).
        ``out_dir``: where the judge's cache goes unless the judge arguments name one."""
        seen = states["seen"].cpu()
        result = {
            "benchmark": self.benchmark,
            "items": len(self.items),
            "evaluated": int((seen > 0).sum()),
            "duplicates": int((seen > 1).sum()),
            "missing": int((seen == 0).sum()),
            "errors": int((states["error"].cpu() > 0).sum()),
        }
        if self.open_ended:
            result.update(self._open_ended(states))
            if self.judge is not None:
                result.update(self._judge(records, out_dir))
        else:
            result.update(self._multiple_choice(states))
        result["error_ids"] = sorted(r["id"] for r in records if r["error"] is not None)
        from datamodules.benchmarks.selection import aggregate as selection

        if sel := selection(records, self.items):
            result["selection"] = sel
        return result

    def _multiple_choice(self, states: dict[str, Tensor]) -> dict:
        correct = states["correct"].cpu() > 0
        parsed = states["parsed"].cpu() > 0
        errors = states["error"].cpu() > 0
        known = torch.tensor([it.answer >= 0 for it in self.items])
        chance = sum(1 / len(it.options) for it in self.items) / len(self.items)  # a uniform guess per item
        out = {"scored": int(known.sum()), "chance": chance, "unparsed": int((~parsed & ~errors & (states["seen"].cpu() > 0)).sum())}
        if not known.any():  # answers are hidden (EgoSchema full set, Perception Test test split): submission only
            return out
        out["accuracy"] = _mean(correct[known])
        out["per_category"] = _per(correct, known, [it.category for it in self.items])
        if self.benchmark == "mvbench":
            cats = out["per_category"]
            out["mean_over_tasks"] = sum(cats.values()) / len(cats)
        if self.benchmark == "videomme":  # the official scorer's views; accuracy over answered items as it reports
            for key in ("duration", "domain"):
                out[f"per_{key}"] = _per(correct, known, [it.extra.get(key, "") for it in self.items])
            answered = known & parsed
            out["accuracy_answered"] = _mean(correct[answered]) if answered.any() else 0.0
        if self.benchmark == "vnbench":  # an item counts only if all of its circular tries are right
            groups: dict[tuple[str, str], list[bool]] = defaultdict(list)
            for it, ok, k in zip(self.items, correct.tolist(), known.tolist()):
                if k:
                    groups[(it.category, it.group)].append(ok)
            per: dict[str, list[bool]] = defaultdict(list)
            for (cat, _), oks in groups.items():
                per[cat].append(all(oks))
            out["circular_per_category"] = {c: sum(v) / len(v) for c, v in sorted(per.items())}
            out["circular_accuracy"] = sum(out["circular_per_category"].values()) / len(per)
        return out

    def _open_ended(self, states: dict[str, Tensor]) -> dict:
        values = states["values"].cpu()
        known = torch.tensor([it.answer != "" for it in self.items])
        out = {"scored": int(known.sum())}
        cats = [it.category for it in self.items]
        for j, name in enumerate(OPEN_ENDED_METRICS):
            out[name] = _mean(values[known, j])
            out[f"{name}_per_category"] = _per(values[:, j], known, cats)
        return out

    def _judge(self, records: list[dict], out_dir) -> dict:
        from pathlib import Path

        from datamodules.benchmarks.judge import Judge, aggregate

        args = dict(self.judge)
        if args.get("cache") is None and out_dir is not None:
            args["cache"] = Path(out_dir) / "judge_cache.jsonl"
        judge = Judge(**args)
        verdicts = []
        for r in sorted(records, key=lambda r: r["index"]):
            item = self.items[r["index"]]
            verdict = judge.judge(item.id, item.question, item.answer, r["prediction"]) if r["error"] is None else None
            r["judge"] = verdict
            verdicts.append(verdict)
        return {**aggregate(verdicts), "judge_model": judge.model, "judge_asked": judge.asked,
                "judge_cached": judge.cached}

    def describe(self, max_new_tokens: int) -> dict:
        """How the answers were obtained, written with the results."""
        from datamodules.benchmarks.prompts import describe

        return {"mode": self.mode, "prompt": describe(self.benchmark) if self.mode == "generate" else "{question}",
                "parse_rule": None if self.open_ended or self.mode == "likelihood" else self.parse_rule,
                "fallback_letter": self.fallback_letter, "max_new_tokens": max_new_tokens,
                "subtitles": self.subtitles, "short_answer": self.short_answer, "decoding": "greedy"}

    # ------------------------------------------------------------------ files

    def submission(self, records: list[dict]) -> tuple[str, str] | None:
        """``(file name, text)`` of the benchmark's submission file when its answers are hidden, else None."""
        hidden = [r for r in records if self.items[r["index"]].answer in (-1, "")]
        if not hidden or self.open_ended:
            return None
        records = sorted(records, key=lambda r: r["index"])
        if self.benchmark == "egoschema":  # the EgoSchema server's CSV
            rows = [f"{self.items[r['index']].extra.get('q_uid', r['id'])},{-1 if r['pred'] is None else r['pred']}"
                    for r in records]
            return "egoschema_submission.csv", "q_uid,answer\n" + "\n".join(rows) + "\n"
        if self.benchmark == "perception_test":  # the challenge server's JSON: {video_id: [{id, answer_id, answer}]}
            import json

            out: dict[str, list] = defaultdict(list)
            for r in records:
                it = self.items[r["index"]]
                answer = None if r["pred"] is None else it.options[r["pred"]]
                out[it.extra.get("video_id", "")].append({"id": it.extra.get("question_id", it.id),
                                                           "answer_id": r["pred"], "answer": answer})
            return "perception_test_submission.json", json.dumps(out, indent=1)
        return None


def _mean(x: Tensor) -> float:
    return float(x.double().mean()) if x.numel() else 0.0


def _per(values: Tensor, known: Tensor, keys: list[str]) -> dict[str, float]:
    """Mean of ``values`` over known items, per key."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        if known[i]:
            groups[key].append(i)
    return {k: _mean(values[torch.tensor(ix)]) for k, ix in sorted(groups.items())}

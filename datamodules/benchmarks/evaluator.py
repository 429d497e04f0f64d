"""Scoring a benchmark's outputs: per-item records, metric states synced across ranks, the benchmark's aggregates.

Per item, the model's output (a generation, or option scores in likelihood mode) becomes one record
(``predictions.jsonl``) and one update of :class:`~datamodules.benchmarks.metrics.ItemScores`. What every
benchmark reports is computed here (items evaluated once, duplicates, missing, errors, the selection hit rate of
needle questions); what a benchmark reports of its own comes from its module (``Benchmark.score``, ``aggregate``,
``submission``):

- multiple choice: accuracy overall and per category (task / task type / question type); Video-MME also per
  duration and domain, plus the official scorer's accuracy over answered items; VNBench: 4-way circular
  accuracy per type and their unweighted mean (VNBench ``eval.py``); unparsed answers are counted and count as
  wrong unless a fallback letter is set;
- open-ended: normalised exact match, token F1 and answer-contained, overall and per answer type, and the
  Video-ChatGPT judge's accuracy and score when a judge endpoint is configured.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from datamodules.benchmarks.base import Benchmark
from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.metrics import ItemScores
from datamodules.benchmarks.selection import aggregate as selection_summary
from datamodules.benchmarks.selection import selection_record


class Evaluator:
    """Scores one benchmark's outputs and aggregates them the way the benchmark reports (the test callback,
    ``lit_bvllm.training.callbacks.BenchmarkEvaluation``, calls ``new_metric``, ``score`` per batch, then
    ``aggregate``, ``submission`` and ``describe``).

    Args:
        benchmark: the benchmark (its parse rule, scoring and aggregation).
        items: its items, in dataset order (``batch["index"]`` points into them).
        mode: ``generate`` or ``likelihood``.
        max_unreadable_fraction: the share of videos that may give no frames before the run fails
            (``--data.max_unreadable_fraction``; :meth:`unreadable`).
    """

    def __init__(self, benchmark: Benchmark, items: list[EvalItem], mode: str = "generate",
                 max_unreadable_fraction: float = 1.0):
        self.benchmark, self.items, self.mode = benchmark, items, mode
        self.max_unreadable_fraction = max_unreadable_fraction

    @property
    def name(self) -> str:
        """The benchmark's name: its files are ``<name>_results.json``, ``<name>_predictions.jsonl``."""
        return self.benchmark.name

    def new_metric(self) -> ItemScores:
        return ItemScores(len(self.items), len(self.benchmark.values))

    # ------------------------------------------------------------------ per batch

    def score(self, batch: dict, output: list[str] | Tensor,
              info: dict | None = None) -> tuple[list[dict], dict[str, Tensor]]:
        """Records and metric updates for one batch: ``output`` is the generated texts or the option scores;
        ``info`` the reducer's (its ``kept_frames`` give the selection record of items with needle times)."""
        records, rows = [], []  # rows: each record's position in the batch
        tokens, flops = ((info or {}).get(k) for k in ("num_tokens", "prefill_flops"))
        if tokens is not None and len(tokens) != len(batch["index"]):
            tokens = None
        if flops is not None and len(flops) != len(batch["index"]):
            flops = None
        members = batch.get("members") or [[int(i)] for i in batch["index"]]
        orders = batch.get("orders") or [[None]] * len(members)
        for b, (i, meta) in enumerate(zip(batch["index"], batch["meta"])):
            if i < 0:  # a stand-in of a rank without items (ShardSampler): scored by nobody
                continue
            for m, order in zip(members[b], orders[b]):  # a request answers each item it stands for
                item = self.items[int(m)]
                answer = output[b] if order is None else output[b][order]  # its options' scores in its order
                record = {"id": item.id, "index": int(m), "prompt": meta["prompt"], "error": meta["error"]}
                record.update(self.benchmark.score(item, answer, self.mode, meta["error"]))
                if tokens is not None:
                    record["visual_tokens"] = int(tokens[b])  # handed to the LLM for this item, after reduction
                if flops is not None:
                    record["prefill_flops"] = float(flops[b])  # the LLM's prefill of its prompt (lit_bvllm.flops)
                records.append(record)
                rows.append(b)
        kept = (info or {}).get("kept_frames")
        if kept is not None:
            self._selection(batch, kept.cpu(), records, rows)
        update = {
            "index": torch.tensor([r["index"] for r in records], dtype=torch.long),
            "correct": torch.tensor([float(r.get("correct", False)) for r in records]),
            "parsed": torch.tensor([float(r.get("parsed", True)) for r in records]),
            "error": torch.tensor([float(r["error"] is not None) for r in records]),
        }
        if self.benchmark.values:
            update["values"] = torch.tensor([[r[k] for k in self.benchmark.values] for r in records],
                                            dtype=torch.float64)
        return records, update

    def _selection(self, batch: dict, kept: Tensor, records: list[dict], rows: list[int]) -> None:
        """Add the kept frames and their hit / event recall (and the uniform control's) to the records of items
        that say where their needles are (``extra["needle_times"]``; :mod:`datamodules.benchmarks.selection`);
        ``rows``: each record's position in the batch (stand-ins have none)."""
        times, mask = batch["frame_times"].cpu(), batch["frame_mask"].cpu()
        for b, record in zip(rows, records):
            spans = self.items[record["index"]].extra.get("needle_times")
            if spans is None or record["error"] is not None:
                continue
            picked = kept[b][kept[b] >= 0]
            record["selection"] = selection_record(times[b, picked].tolist(), times[b][mask[b]].tolist(), spans)

    # ------------------------------------------------------------------ aggregation

    def aggregate(self, states: dict[str, Tensor], records: list[dict], out_dir: str | Path | None = None) -> dict:
        """The benchmark's numbers from the synced states (and, for the judge and errors, the gathered records).
        ``out_dir``: the run's folder (where the judge's cache goes unless the judge names one)."""
        seen = states["seen"].cpu()
        result = {
            "benchmark": self.benchmark.name,
            "items": len(self.items),
            "evaluated": int((seen > 0).sum()),
            "duplicates": int((seen > 1).sum()),
            "missing": int((seen == 0).sum()),
            "errors": int((states["error"].cpu() > 0).sum()),
            **self.videos(records),
        }
        result.update(self.benchmark.aggregate(states, records, self.items, out_dir))
        result["error_ids"] = sorted(r["id"] for r in records if r["error"] is not None)
        if selection := selection_summary(records, self.items):
            result["selection"] = selection
        if tokens := [r["visual_tokens"] for r in records if r["error"] is None and "visual_tokens" in r]:
            result["visual_tokens"] = {"mean": sum(tokens) / len(tokens), "min": min(tokens), "max": max(tokens)}
        if flops := [r["prefill_flops"] for r in records if r["error"] is None and "prefill_flops" in r]:
            result["prefill_flops"] = {"mean": sum(flops) / len(flops), "min": min(flops), "max": max(flops)}
        return result

    def videos(self, records: list[dict]) -> dict:
        """``{"videos": distinct videos of the items, "unreadable_videos": those that gave no frames}`` (missing or
        undecodable; media refused for lying outside the benchmark's folders are reported apart, in ``error_ids``)."""
        bad = {self.items[r["index"]].video for r in self._unreadable(records)}
        return {"videos": len({it.video for it in self.items}), "unreadable_videos": len(bad)}

    def _unreadable(self, records: list[dict]) -> list[dict]:
        return [r for r in records if r["error"] is not None and not r["error"].startswith("path_escape")]

    def unreadable(self, records: list[dict]) -> str | None:
        """An error message when more than ``max_unreadable_fraction`` of the videos gave no frames (missing,
        undecodable), naming where they were looked for; None otherwise."""
        allowed = self.max_unreadable_fraction
        counts, bad_records = self.videos(records), self._unreadable(records)
        if counts["unreadable_videos"] <= allowed * counts["videos"]:
            return None
        bad = sorted({self.items[r["index"]].video for r in bad_records})
        first = bad_records[0]
        return (unreadable_report(self.benchmark, counts["videos"], bad, "unreadable", allowed)
                + f". First error: item {first['id']}: {first['error']}")

    def describe(self, max_new_tokens: int) -> dict:
        """How the answers were obtained, written with the results."""
        p = self.benchmark.protocol(self.mode)
        return {"mode": self.mode, "prompt": p["prompt"], "parse_rule": p["parse_rule"],
                "fallback_letter": p["fallback_letter"], "max_new_tokens": max_new_tokens,
                "subtitles": p["subtitles"], "short_answer": p["short_answer"], "decoding": "greedy"}

    # ------------------------------------------------------------------ files

    def submission(self, records: list[dict]) -> tuple[str, str] | None:
        """``(file name, text)`` of the benchmark's submission file when some of its answers are hidden or its server
        scores the set, else None."""
        hidden = any(self.items[r["index"]].answer in (-1, "") for r in records)
        if not (hidden or self.benchmark.server_scored):
            return None
        return self.benchmark.submission(sorted(records, key=lambda r: r["index"]), self.items)


def unreadable_report(benchmark: Benchmark, total: int, paths: list[str], what: str, allowed: float) -> str:
    """``"3 of 48 vnbench videos are missing (under '/data/vn'): a.mp4, ... Set ..."``: the share, the folders they
    were looked for in, a few of the paths and the flags that change where videos are looked for or how many may
    fail."""
    folders = sorted({os.path.dirname(p) for p in paths})
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    where = ", ".join(f"'{f}'" for f in folders[:3]) + (f" and {len(folders) - 3} more" if len(folders) > 3 else "")
    flag = "--data.benchmark.video_root" if hasattr(benchmark, "video_root") else "--data.benchmark.root"
    return (f"{len(paths)} of {total} {benchmark.name} videos are {what} (looked for under {where}): {shown}. Set "
            f"{flag} (or --data.benchmark.root) to the folder that holds them, or raise "
            f"--data.max_unreadable_fraction (now {allowed}) to score them as wrong")

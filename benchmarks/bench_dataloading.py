"""Data-loading benchmark: pipeline throughput against raw decord, and DataLoader worker memory on a 1M-entry file.

Usage::

    python benchmarks/bench_dataloading.py --out artifacts/bench [--quick]

Every ratio is taken within one run, on one machine:

1. **throughput**: ``VideoInstructDataModule`` over the video entries of the synthetic ``finetune.json`` (fps mode,
   1 fps, batch 4), ``transform=processor`` and ``plain``, 0, 1 and 2 workers (persistent); every setting is timed
   once per round, a warm-up round first, and the median pass is kept;
2. **baselines**: ``decord.VideoReader(path, num_threads=1).get_batch(indices)`` on exactly the indices the dataset
   computes (``sample_times`` / ``times_to_indices``): in this process, in 2 forked processes, and in 1 process
   pinned to 1 core; plus the time of each stage (tokenize, decode, transform) on the same samples, in-process;
3. **memory**: an N-entry LLaVA-schema file (1M; JSON list and JSONL) behind the byte-offset index, against a naive
   store that ``json.load``-s the file into a list of dicts; each case runs in a fresh interpreter and its 2
   DataLoader workers are forked (the Linux default); their USS/PSS come from psutil ``memory_full_info()``.

The tiny backbones and the synthetic set are generated under ``OUT/data`` when missing; the big annotation files
and the index cache (``$LIT_BVLLM_CACHE``) live in a temporary folder under ``OUT`` that is deleted at the end.
Writes ``OUT/dataloading.json`` (every number and the machine) and ``OUT/dataloading.md`` (the printed tables).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lit_bvllm.cli import setup_process  # noqa: E402

setup_process()  # as lit_bvllm: offline, before transformers is imported
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

import decord  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from datamodules import VideoInstructDataModule, VideoInstructDataset  # noqa: E402
from datamodules.annotations import AnnotationFile  # noqa: E402
from datamodules.transforms import FrameTransform  # noqa: E402
from datamodules.video import frames_at, sample_times, times_to_indices  # noqa: E402

MB = 2**20
FPS, MAX_FRAMES, BATCH = 1.0, 128, 4
WORKERS = (0, 1, 2)
TRANSFORMS = ("processor", "plain")
STAGES = ("tokenize", "decode", "transform_processor", "transform_plain")
_WORDS = ("red green blue yellow circle square triangle star moving left right appears briefly second frame video "
          "background shape colour bright dark twice once before after during count how many what which object "
          "order first last ring heart box ball gradient still static").split()


def machine() -> dict:
    """Cores, memory and library versions of this machine."""
    import tokenizers
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {
        "cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "gpu": torch.cuda.is_available(),
        "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "decord": decord.__version__, "numpy": np.__version__, "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__, "psutil": psutil.__version__,
        "start_method": multiprocessing.get_start_method(), "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def prepare_data(root: Path) -> tuple[Path, Path]:
    """The tiny backbones and synthetic set under ``root`` (generated when missing) and the video-only finetune file."""
    from lit_bvllm.world import make_synthetic
    from lit_bvllm.world.tiny import make_tiny

    if not (root / "tiny" / "llm").is_dir() or not (root / "tiny" / "vision").is_dir():
        make_tiny(root / "tiny")
    synthetic = root / "synthetic"
    if not (synthetic / "finetune.json").is_file():
        make_synthetic(synthetic, seed=0)
    entries = [e for e in json.loads((synthetic / "finetune.json").read_text()) if "video" in e]
    videos_only = synthetic / "finetune_videos.json"
    videos_only.write_text(json.dumps(entries, indent=1) + "\n")
    return root / "tiny", videos_only


def datamodule(train: str, tiny: Path, transform: str, workers: int, frame_mode: str = "fps",
               num_frames: int = 16, **kw) -> VideoInstructDataModule:
    """The suite's DataModule on the tiny backbones (1 fps in ``fps`` mode, batch 4), set up for fitting; ``kw``
    sets or replaces any other of its arguments (``decoder``, ``streaming``, ``vision_tower``...)."""
    args = dict(tokenizer=str(tiny / "llm"), vision_tower=str(tiny / "vision"), transform=transform,
                frame_mode=frame_mode, fps=FPS, num_frames=num_frames, max_frames=MAX_FRAMES, max_length=1024,
                visual_tokens=64, batch_size=BATCH, num_workers=workers)
    dm = VideoInstructDataModule(train=train, **{**args, **kw})
    dm.setup("fit")
    return dm


def one_pass(loader: DataLoader) -> dict:
    """Iterate ``loader`` once: videos, frames and skipped entries."""
    videos = frames = skipped = 0
    for batch in loader:
        videos += sum(m["media"] == "video" for m in batch["meta"])
        frames += int(batch["frame_mask"].sum())
        skipped += len(batch["skipped"])
    return {"videos": videos, "frames": frames, "skipped": skipped}


def decode_entries(jobs: list[tuple[str, float | None, float | None]], decoder: str = "decord") -> dict:
    """The decoder alone (decord, or torchcodec; one thread, no header check) on the frames the dataset decodes for
    each ``(path, start, end)``: same sampling, same indices."""
    frames = 0
    for path, start, end in jobs:
        if decoder == "decord":
            vr = decord.VideoReader(path, num_threads=1)
            total, native_fps = len(vr), float(vr.get_avg_fps())
        else:
            from torchcodec.decoders import VideoDecoder

            vr = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=1, seek_mode="exact")
            total, native_fps = vr.metadata.num_frames, float(vr.metadata.average_fps)
        times = sample_times(total / native_fps, "fps", FPS, max_frames=MAX_FRAMES, start=start, end=end)
        frames += len(frames_at(vr, times_to_indices(times, native_fps, total).tolist()))
        del vr
    return {"videos": len(jobs), "frames": frames}


class StageClock:
    """Seconds spent in each stage of ``VideoInstructDataset.load`` over one pass, in this process.

    Args:
        dataset: the dataset (its transform is the ``processor`` one).
        plain: the ``plain`` transform, timed on the same decoded frames.
    """

    def __init__(self, dataset: VideoInstructDataset, plain: FrameTransform):
        self.ds, self.plain = dataset, plain

    def __call__(self) -> dict:
        ds, clock = self.ds, dict.fromkeys(STAGES, 0.0)
        for j in range(len(ds)):
            t0 = time.perf_counter()
            entry, conv, *_, path = ds.prepare(int(ds.source_of[j]), int(ds.entry_of[j]))  # parse + chat template
            ds.question_tokenizer(conv.question, add_special_tokens=True, truncation=True,
                                  max_length=ds.max_question_length)
            t1 = time.perf_counter()
            frames, _, _ = ds.decode(entry, conv.media, path)
            t2 = time.perf_counter()
            ds.transform(frames)
            t3 = time.perf_counter()
            self.plain(frames)
            for k, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3)):
                clock[k] += dt
        return {"videos": len(ds), **clock}


def rounds(runs: dict, passes: int) -> dict:
    """Call every entry of ``runs`` once per round: one warm-up round, then ``passes`` timed rounds.

    Settings take turns inside a round, so drift of a shared machine hits them alike. The warm-up round starts
    persistent workers and fills the page cache and the tokenizer's caches. Returns ``{key: (seconds, results)}``,
    each result with the CPU seconds its call used (``cpu_s``, this process and its children).
    """
    out: dict = {key: ([], []) for key in runs}
    for r in range(passes + 1):
        for key, run in runs.items():
            t0, c0 = time.perf_counter(), cpu_seconds()
            result = run()
            if r:
                out[key][0].append(time.perf_counter() - t0)
                out[key][1].append({**result, "cpu_s": cpu_seconds() - c0})
    return out


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) used so far by this process and its live children (workers, pools)."""
    procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def throughput(train: Path, tiny: Path, passes: int) -> dict:
    """Median seconds per pass of the pipeline settings and of the decord baselines, and the stage split.

    The in-process settings are timed first, before any process is forked: decord's reader works in two threads
    (the caller and a decoder thread) and runs several times slower when they share one core (the ``pinned``
    baseline); in trials, in-process decoding right after multi-process runs was slowed that way for seconds.
    """
    jobs = [(str(train.parent / e["video"]), e.get("start"), e.get("end")) for e in json.loads(train.read_text())]
    dms = {(t, w): datamodule(str(train), tiny, t, w) for t in TRANSFORMS for w in WORKERS}
    loaders = {key: dm.train_dataloader() for key, dm in dms.items()}
    runs = {("pipeline", t, 0): partial(one_pass, loaders[t, 0]) for t in TRANSFORMS}
    runs["decord", "1 process", 1] = partial(decode_entries, jobs)
    runs["stages", None, 0] = StageClock(dms["processor", 0].train_set, dms["plain", 0].transform)
    timed = rounds(runs, passes)
    core = min(os.sched_getaffinity(0))
    with multiprocessing.get_context("fork").Pool(2) as pool, \
            multiprocessing.get_context("fork").Pool(1, os.sched_setaffinity, (0, {core})) as pinned:
        runs = {("pipeline", t, w): partial(one_pass, loaders[t, w]) for t in TRANSFORMS for w in WORKERS if w}
        halves = [jobs[0::2], jobs[1::2]]
        runs["decord", "2 processes", 2] = lambda: {k: sum(r[k] for r in pool.map(decode_entries, halves))
                                                    for k in ("videos", "frames")}
        runs["decord", "1 process pinned to 1 core", 1] = lambda: pinned.apply(decode_entries, (jobs,))
        timed.update(rounds(runs, passes))
    del loaders, runs, dms
    gc.collect()  # shuts the persistent workers down
    out: dict = {"passes": passes, "settings": []}
    for (kind, label, workers), (secs, results) in timed.items():
        median = float(np.median(secs))
        row = {"kind": kind, "label": label, "workers": workers, "pass_s": secs, "median_s": median, **results[-1],
               "cpu_s": float(np.median([r["cpu_s"] for r in results]))}
        if kind == "stages":  # per-stage medians over the passes
            out["stages"] = {**row, **{k: float(np.median([r[k] for r in results])) for k in STAGES}}
        else:
            rates = {"videos_per_s": row["videos"] / median, "frames_per_s": row["frames"] / median}
            out["settings"].append({**row, **rates})
    return out


def write_annotations(path_json: Path, path_jsonl: Path, n: int, videos: int, seed: int = 0) -> dict:
    """``n`` LLaVA-schema video entries (id, video, 2 or 4 turns; ~300-600 bytes) as a JSON list and as JSONL."""
    rng = np.random.default_rng(seed)

    def sentences(count: int, lo: int, hi: int, end: str) -> list[str]:
        return [" ".join(_WORDS[w] for w in rng.integers(len(_WORDS), size=k)).capitalize() + end
                for k in rng.integers(lo, hi, size=count)]

    questions = sentences(2048, 6, 12, "?")
    long_answers, short_answers = sentences(2048, 24, 56, "."), sentences(2048, 8, 22, ".")  # for 1 and 2 QA pairs
    pairs, video = rng.integers(1, 3, n), rng.integers(videos, size=n)  # QA pairs per entry: 2 or 4 turns
    q, a = rng.integers(2048, size=(n, 2)), rng.integers(2048, size=(n, 2))
    sizes = np.empty(n, np.int64)
    with open(path_json, "w") as fj, open(path_jsonl, "w") as fl:
        fj.write("[\n")
        for i in range(n):
            answers = long_answers if pairs[i] == 1 else short_answers
            turns = []
            for k in range(pairs[i]):
                turns += [{"from": "human", "value": ("<video>\n" if k == 0 else "") + questions[q[i, k]]},
                          {"from": "gpt", "value": answers[a[i, k]]}]
            entry = {"id": f"bench_{i:07d}", "video": f"videos/vid_{video[i]:04d}.mp4", "conversations": turns}
            line = json.dumps(entry)
            sizes[i] = len(line)
            fj.write(line + (",\n" if i < n - 1 else "\n"))
            fl.write(line + "\n")
        fj.write("]\n")
    return {"entries": n, "bytes_mean": float(sizes.mean()), "bytes_min": int(sizes.min()),
            "bytes_max": int(sizes.max()), "json_mb": path_json.stat().st_size / MB,
            "jsonl_mb": path_jsonl.stat().st_size / MB}


class InMemoryAnnotations:
    """The naive store the index replaces: the whole file ``json.load``-ed into a list of dicts."""

    def __init__(self, entries: list[dict], path: str):
        self.entries, self.path = entries, Path(path)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        return self.entries[index]


class EntryTouch(Dataset):
    """Item ``k`` reads ``chunk`` seeded-random entries of ``store`` (no decoding): worker memory per entry read."""

    def __init__(self, store: AnnotationFile | InMemoryAnnotations, chunks: int, chunk: int):
        self.store, self.chunks, self.chunk = store, chunks, chunk

    def __len__(self) -> int:
        return self.chunks

    def __getitem__(self, k: int) -> int:
        idx = np.random.default_rng([1, k]).integers(len(self.store), size=self.chunk)
        return sum(len(self.store[int(i)]["conversations"]) for i in idx)


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (``VmHWM``; Linux >= 4.0) so that :func:`peak_rss_mb` measures from here."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """This process's peak RSS since the last :func:`reset_peak_rss` (MiB)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def process_memory(pids: list[int]) -> list[dict]:
    """USS, PSS and RSS (MiB) of each process."""
    out = []
    for pid in pids:
        m = psutil.Process(pid).memory_full_info()
        out.append({"pid": pid, "uss_mb": m.uss / MB, "pss_mb": m.pss / MB, "rss_mb": m.rss / MB})
    return out


def memory_case(kind: str, path: str, mixture: str, tiny: str, samples: int, touches: int, chunk: int) -> dict:
    """One memory case in this (fresh) interpreter: build the store, then read it from 2 forked workers."""
    me = psutil.Process()
    rss0 = me.memory_info().rss
    reset_peak_rss()
    out: dict = {"kind": kind, "file": Path(path).suffix}
    if kind == "index":
        t0 = time.perf_counter()
        store = AnnotationFile(path)  # the cache folder is empty: a cold build
        out["build_s"] = time.perf_counter() - t0
        out["store_rss_delta_mb"] = (me.memory_info().rss - rss0) / MB
        out["peak_rss_delta_mb"] = peak_rss_mb() - rss0 / MB
        t0 = time.perf_counter()
        store = AnnotationFile(path)
        out["cache_hit_s"] = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        with open(path) as f:
            entries = json.load(f) if path.endswith(".json") else [json.loads(line) for line in f if line.strip()]
        out["build_s"] = time.perf_counter() - t0
        out["store_rss_delta_mb"] = (me.memory_info().rss - rss0) / MB
        out["peak_rss_delta_mb"] = peak_rss_mb() - rss0 / MB
        store = InMemoryAnnotations(entries, path)
    dm = datamodule(mixture, Path(tiny), "plain", 2, frame_mode="uniform", num_frames=2)
    dm.train_set.files = [store]  # the index case: the same AnnotationFile; the naive case: the list of dicts
    out["main_after_setup"] = process_memory([me.pid])[0]

    # 1. the real pipeline (2 frames per video, so text handling dominates), shuffled over the whole file
    before = {p.pid for p in me.children()}
    loader = dm.train_dataloader()
    batches, seen, skipped, checkpoints = iter(loader), 0, 0, []
    for target in (BATCH, samples // 2, samples):
        while seen < target:
            batch = next(batches)
            seen, skipped = seen + len(batch["meta"]), skipped + len(batch["skipped"])
        workers = [p.pid for p in me.children() if p.pid not in before]
        checkpoints.append({"samples": seen, "workers": process_memory(workers), "main": process_memory([me.pid])[0]})
    out.update(pipeline=checkpoints, skipped=skipped)
    del batches, loader
    gc.collect()

    # 2. entry reads only, many of them: how worker memory grows with the share of the file touched
    before = {p.pid for p in me.children()}
    touch = DataLoader(EntryTouch(store, touches // chunk, chunk), batch_size=None, num_workers=2,
                       persistent_workers=True)
    t0 = time.perf_counter()
    for _ in touch:
        pass
    workers = [p.pid for p in me.children() if p.pid not in before]
    out["touch"] = {"entries_read": touches // chunk * chunk, "seconds": time.perf_counter() - t0,
                    "workers": process_memory(workers), "main": process_memory([me.pid])[0]}
    return out


def run_memory_case(**kwargs) -> dict:
    """``memory_case`` in a fresh interpreter (so each case's main-process RSS starts from the same point)."""
    cmd = [sys.executable, __file__, "--case", json.dumps(kwargs)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def throughput_tables(tp: dict) -> list[str]:
    """Markdown: videos/s and frames/s of every setting and their ratios to decord; the stage split."""
    rows = {(s["kind"], s["label"], s["workers"]): s for s in tp["settings"]}
    dec1, dec2 = rows["decord", "1 process", 1], rows["decord", "2 processes", 2]
    first = tp["settings"][0]
    lines = [f"### Throughput: {first['videos']} videos, {first['frames']} frames per pass (fps=1, batch 4); "
             f"median of {tp['passes']} timed passes", "",
             "| setting | workers | videos/s (min-max) | frames/s | / decord, 1 process | / decord, 2 processes "
             "| CPU s/pass |",
             "|---|---|---|---|---|---|---|"]
    for kind, label, workers in sorted(rows, key=lambda k: (k[0] != "pipeline", k[1] != "processor", k[2])):
        s = rows[kind, label, workers]
        lo, hi = s["videos"] / max(s["pass_s"]), s["videos"] / min(s["pass_s"])
        name = f"pipeline, transform={label}" if kind == "pipeline" else f"decord get_batch only, {label}"
        lines.append(f"| {name} | {workers if kind == 'pipeline' else ''} | "
                     f"{s['videos_per_s']:.1f} ({lo:.1f}-{hi:.1f}) "
                     "| "
                     f"{s['frames_per_s']:.0f} | {s['videos_per_s'] / dec1['videos_per_s']:.2f} | "
                     f"{s['videos_per_s'] / dec2['videos_per_s']:.2f} | {s['cpu_s']:.1f} |")
    st = tp["stages"]
    ms = {k: 1000 * st[k] / st["videos"] for k in STAGES}  # per-stage medians over the passes
    lines += ["", f"### Stage split: the same {st['videos']} samples timed stage by stage in-process (median of "
              f"{tp['passes']} passes)", "",
              "| stage | ms/video | share, transform=processor | share, transform=plain |", "|---|---|---|---|"]
    total = {t: ms["tokenize"] + ms["decode"] + ms[f"transform_{t}"] for t in TRANSFORMS}
    for name, key in (("tokenize (parse, chat template, question)", "tokenize"), ("decode (read_video)", "decode"),
                      ("transform=processor", "transform_processor"), ("transform=plain", "transform_plain")):
        shares = [f"{100 * ms[key] / total[t]:.0f}%" if not key.startswith("transform") or key.endswith(t) else ""
                  for t in TRANSFORMS]
        lines.append(f"| {name} | {ms[key]:.1f} | " + " | ".join(shares) + " |")
    pipe = {t: 1000 * rows["pipeline", t, 0]["median_s"] / rows["pipeline", t, 0]["videos"] for t in TRANSFORMS}
    lines.append("| sum of the stages | | " + " | ".join(f"{total[t]:.1f} ms" for t in TRANSFORMS) + " |")
    lines.append("| pipeline, 0 workers (incl. collate, DataLoader) | | "
                 + " | ".join(f"{pipe[t]:.1f} ms" for t in TRANSFORMS) + " |")
    return lines


def memory_tables(m: dict) -> list[str]:
    """Markdown: build cost of each annotation store and the USS/PSS of the DataLoader workers reading it."""
    a = m["annotations"]
    lines = [f"### Annotation store: {a['entries']:,} entries, {a['bytes_min']}-{a['bytes_max']} B each (mean "
             f"{a['bytes_mean']:.0f}); JSON {a['json_mb']:.0f} MiB, JSONL {a['jsonl_mb']:.0f} MiB", "",
             "| store | build s | index cache hit s | main RSS delta MiB | peak RSS delta MiB |",
             "|---|---|---|---|---|"]
    for c in m["cases"]:
        hit = f"{c['cache_hit_s']:.3f}" if "cache_hit_s" in c else "n/a"
        lines.append(f"| {c['kind']} {c['file']} | {c['build_s']:.2f} | {hit} | {c['store_rss_delta_mb']:.0f} | "
                     f"{c['peak_rss_delta_mb']:.0f} |")
    lines += ["", "### DataLoader with 2 forked workers (MiB; per worker: worker 0 / worker 1)", "",
              "| store | after | worker USS | worker PSS | main PSS | total PSS, main + workers |",
              "|---|---|---|---|---|---|"]
    for c in m["cases"]:
        points = [(f"{cp['samples']} samples (pipeline)", cp) for cp in c["pipeline"]]
        points.append((f"{c['touch']['entries_read']:,} entry reads (no decoding)", c["touch"]))
        for label, cp in points:
            uss = " / ".join(f"{w['uss_mb']:.0f}" for w in cp["workers"])
            pss = " / ".join(f"{w['pss_mb']:.0f}" for w in cp["workers"])
            total = cp["main"]["pss_mb"] + sum(w["pss_mb"] for w in cp["workers"])
            lines.append(f"| {c['kind']} {c['file']} | {label} | {uss} | {pss} | "
                         f"{cp['main']['pss_mb']:.0f} | {total:.0f} |")
    return lines


def markdown(r: dict) -> str:
    """The result tables."""
    return "\n".join(throughput_tables(r["throughput"]) + [""] + memory_tables(r["memory"])) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="output folder: dataloading.json, dataloading.md, data/ (required)")
    parser.add_argument("--quick", action="store_true", help="100k entries, one timed pass (about 2 minutes)")
    parser.add_argument("--entries", type=int, help="entries of the big annotation file (default 1M; quick: 100k)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one memory case, run in a child interpreter
    args = parser.parse_args()
    if args.case:
        print(json.dumps(memory_case(**json.loads(args.case))))
        return
    if args.out is None:
        parser.error("--out is required")
    start = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    passes = 1 if args.quick else 5
    entries = args.entries or (100_000 if args.quick else 1_000_000)
    results: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                     "date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick, "machine": machine()}
    with tempfile.TemporaryDirectory(dir=out, prefix="tmp_") as tmp:
        os.environ["LIT_BVLLM_CACHE"] = str(Path(tmp) / "cache")  # the index cache, deleted with the big files
        tiny, train = prepare_data(out / "data")
        print(f"[1/3] throughput: {train} ({passes} timed pass(es) per setting)", flush=True)
        results["throughput"] = throughput(train, tiny, passes)
        frames = {s["frames"] for s in results["throughput"]["settings"]}
        assert len(frames) == 1, f"the pipeline and the decord baseline decoded different frame counts: {frames}"

        print(f"[2/3] writing {entries:,} annotation entries", flush=True)
        big_json, big_jsonl = Path(tmp) / "annotations_big.json", Path(tmp) / "annotations_big.jsonl"
        t0 = time.perf_counter()
        videos = len(list((train.parent / "videos").glob("vid_*.mp4")))
        stats = write_annotations(big_json, big_jsonl, entries, videos)
        stats["write_s"] = time.perf_counter() - t0
        print("[3/3] worker memory: index .json, index .jsonl, naive json.load", flush=True)
        cases = []
        for kind, path in (("index", big_json), ("index", big_jsonl), ("naive", big_json)):
            mixture = Path(tmp) / f"mixture_{path.suffix[1:]}.yaml"  # media paths resolve against the synthetic set
            mixture.write_text(json.dumps({"datasets": [{"path": str(path), "root": str(train.parent)}]}))
            cases.append(run_memory_case(kind=kind, path=str(path), mixture=str(mixture), tiny=str(tiny),
                                         samples=200 if args.quick else 400, touches=entries // 4,
                                         chunk=max(1, min(2000, entries // 4))))
        results["memory"] = {"annotations": stats, "cases": cases}
    results["total_s"] = time.perf_counter() - start
    table = markdown(results)
    print("\n" + table + f"\ntotal {results['total_s']:.0f} s")
    (out / "dataloading.md").write_text(table)
    (out / "dataloading.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

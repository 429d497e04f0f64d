"""Streaming benchmark (issue 27): frame shards against decoding on the fly, decord against torchcodec, the decoder
process's cost, the HF processor path against bare decord, bytes per video-hour, and a 2-rank streaming run.

Usage::

    python benchmarks/bench_streaming.py --out artifacts/bench [--quick]

One run, one machine, the same frames throughout: the video entries of the synthetic ``finetune.json`` at 1 fps
(cap 128), resized to the tiny tower's input (``transform=plain`` unless named), batch 4, in this process
(``num_workers=0``: the cost per sample of each path, not the machine's parallelism). Settings take turns inside each
round (one warm-up round, then ``--passes`` timed rounds; the median is kept), so drift hits them alike:

- ``decord`` / ``torchcodec`` bare: the decoder alone on exactly the indices the dataset decodes;
- ``on the fly``: ``VideoInstructDataModule``'s loader (parse, tokenize, decode, resize, collate) with each decoder,
  with and without the decoder process (``--data.isolate_decoder``), and with ``transform=processor`` (the tower's
  HF image processor; without torchvision transformers takes its PIL path);
- ``shards``: ``--data.streaming`` over shards of the same entries, JPEG (quality 90, 4:4:4) and raw.

CPU seconds per sample count this process and its children (the decoder process). Bytes per video-hour: the shards'
frame bytes per frame x 3600 (1 fps), at the tiny tower's size and at 336 px (``transform=plain``, 336). The 2-rank
run: two processes (gloo) each stream their share of the JPEG shards for 10 epochs, samples/s of both together
against one. The 336 px rows resize to 336 (``transform=plain``, no tower) on the fly and from 336 px JPEG shards.
Writes ``OUT/streaming.json`` and ``OUT/streaming.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_dataloading import MAX_FRAMES, cpu_seconds, decode_entries, machine, prepare_data, rounds  # noqa: E402
from bench_dataloading import datamodule as loading_datamodule  # noqa: E402

from datamodules import VideoInstructDataModule  # noqa: E402
from datamodules.shards import write_shards  # noqa: E402


def datamodule(train: Path, tiny: Path, transform: str = "plain", **kw) -> VideoInstructDataModule:
    """bench_dataloading's data module, in this process (``num_workers=0``)."""
    return loading_datamodule(str(train), tiny, transform, 0, **kw)


def one_pass(dm: VideoInstructDataModule) -> dict:
    videos = frames = 0
    for batch in dm.train_dataloader():
        videos += len(batch["meta"])
        frames += int(batch["frame_mask"].sum())
    return {"videos": videos, "frames": frames}


def frame_bytes(folder: Path) -> tuple[int, int]:
    """Bytes of the frames in a shard folder and their count (every item read back)."""
    from litdata import StreamingDataset

    total = count = 0
    for part in sorted((folder / "train").iterdir()):
        ds = StreamingDataset(str(part))
        for i in range(len(ds)):
            sizes = np.asarray(ds[i]["frame_bytes"])
            total, count = total + int(sizes.sum()), count + len(sizes)
    return total, count


EPOCHS = 10  # epochs each rank streams in the rank runs (60 samples are a tenth of a second)


def _rank(rank: int, world: int, folder: str, train: str, tiny: str, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    dm = datamodule(Path(train), Path(tiny), streaming=folder)
    torch.distributed.barrier()
    t0, n = time.perf_counter(), 0
    loader = dm.train_dataloader()
    for _ in range(EPOCHS):
        n += sum(len(b["meta"]) for b in loader)
    seconds = time.perf_counter() - t0
    queue.put((rank, n, seconds))
    torch.distributed.destroy_process_group()


def ranks_run(world: int, folder: Path, train: Path, tiny: Path) -> dict:
    """``world`` processes stream their shares of ``folder`` once; samples and the slowest rank's seconds."""
    ctx = multiprocessing.get_context("spawn")
    queue, port = ctx.Queue(), 29500 + os.getpid() % 1000 + world
    procs = [ctx.Process(target=_rank, args=(r, world, str(folder), str(train), str(tiny), port, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    samples, seconds = sum(n for _, n, _ in got), max(s for *_, s in got)
    return {"ranks": world, "samples": samples, "seconds": seconds, "samples_per_s": samples / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder: streaming.json, streaming.md, data/, shards/")
    parser.add_argument("--passes", type=int, default=3, help="timed rounds (median kept)")
    parser.add_argument("--quick", action="store_true", help="one timed round")
    args = parser.parse_args()
    out = Path(args.out)
    passes = 1 if args.quick else args.passes
    tiny, train = prepare_data(out / "data")
    jobs = [(str(train.parent / e["video"]), e.get("start"), e.get("end")) for e in json.loads(train.read_text())]
    result: dict = {"machine": machine(), "entries": len(jobs), "passes": passes}

    shards, written = out / "shards", {}
    for fmt in ("jpeg", "raw"):
        t0, c0 = time.perf_counter(), cpu_seconds()
        source = datamodule(train, tiny)
        m = write_shards(source, str(shards / fmt), workers=2, frames=fmt, overwrite=True)
        written[fmt] = {"seconds": time.perf_counter() - t0, "samples": m["written"], "cpu_s_here": cpu_seconds() - c0}
    big, at_336 = out / "shards_336", {"vision_tower": None, "image_size": 336}
    write_shards(datamodule(train, tiny, **at_336), str(big), workers=2, overwrite=True)
    sizes = {"tiny": (frame_bytes(shards / "jpeg"), frame_bytes(shards / "raw")), "336": frame_bytes(big)}
    S = source.transform.image_size
    result["bytes_per_video_hour"] = {
        f"jpeg q90 {S} px": sizes["tiny"][0][0] / sizes["tiny"][0][1] * 3600,
        f"raw {S} px": sizes["tiny"][1][0] / sizes["tiny"][1][1] * 3600,
        "jpeg q90 336 px": sizes["336"][0] / sizes["336"][1] * 3600, "raw 336 px": 3 * 336 * 336 * 3600}
    result["write"] = written

    runs = {
        "decord, bare": partial(decode_entries, jobs),
        "torchcodec, bare": partial(decode_entries, jobs, "torchcodec"),
        "on the fly, decord, decoder process": partial(one_pass, datamodule(train, tiny)),
        "on the fly, decord, in process": partial(one_pass, datamodule(train, tiny, isolate_decoder=False)),
        "on the fly, torchcodec, decoder process": partial(one_pass, datamodule(train, tiny, decoder="torchcodec")),
        "on the fly, decord, processor transform": partial(one_pass, datamodule(train, tiny, "processor")),
        "shards, jpeg": partial(one_pass, datamodule(train, tiny, streaming=str(shards / "jpeg"))),
        "shards, raw": partial(one_pass, datamodule(train, tiny, streaming=str(shards / "raw"))),
        "on the fly, decord, decoder process, 336 px": partial(one_pass, datamodule(train, tiny, **at_336)),
        "on the fly, torchcodec, decoder process, 336 px": partial(
            one_pass, datamodule(train, tiny, decoder="torchcodec", **at_336)),
        "shards, jpeg, 336 px": partial(one_pass, datamodule(train, tiny, streaming=str(big), **at_336)),
    }
    timed = rounds(runs, passes)
    rows = []
    for name, (secs, results) in timed.items():
        median = float(np.median(secs))
        cpu = float(np.median([r["cpu_s"] for r in results]))
        rows.append({"setting": name, "median_s": median, "pass_s": secs, "videos": results[-1]["videos"],
                     "frames": results[-1]["frames"], "samples_per_s": results[-1]["videos"] / median,
                     "cpu_ms_per_sample": 1000 * cpu / results[-1]["videos"]})
    base = next(r for r in rows if r["setting"] == "decord, bare")["samples_per_s"]
    for r in rows:
        r["vs_bare_decord"] = r["samples_per_s"] / base
    result["settings"] = rows
    result["two_ranks"] = [ranks_run(w, shards / "jpeg", train, tiny) for w in (1, 2)]

    (out / "streaming.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"machine: {result['machine']['cpu']}, {result['machine']['usable_cores']} cores; {len(jobs)} videos "
             f"at 1 fps (cap {MAX_FRAMES}), {rows[0]['frames']} frames, {S} px; median of {passes} pass(es)", "",
             "| path | samples/s | CPU ms per sample | x bare decord |", "|---|---:|---:|---:|"]
    lines += [f"| {r['setting']} | {r['samples_per_s']:.1f} | {r['cpu_ms_per_sample']:.1f} | "
              f"{r['vs_bare_decord']:.2f} |" for r in rows]
    lines += ["", "| shards | bytes per video-hour (1 fps) |", "|---|---:|"]
    lines += [f"| {k} | {v / 2**20:.1f} MiB |" for k, v in result["bytes_per_video_hour"].items()]
    lines += ["", "| write (2 workers) | seconds | samples |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['seconds']:.1f} | {v['samples']} |" for k, v in written.items()]
    lines += ["", f"| ranks streaming (gloo, 1 thread, {EPOCHS} epochs) | samples | s (slowest rank) | samples/s |",
              "|---:|---:|---:|---:|"]
    lines += [f"| {r['ranks']} | {r['samples']} | {r['seconds']:.2f} | {r['samples_per_s']:.1f} |"
              for r in result["two_ranks"]]
    (out / "streaming.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

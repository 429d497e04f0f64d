"""What a reducer selected, drawn: the video's sampled frames as a strip, the frames whose content reaches the LLM
outlined with their selection weight and merge group, the question and the model's answer, and each kept frame's
spatial-sampling attention as a heatmap over the frame (the B-VLLM paper's Fig. 4).

Any reducer that reports ``frame_indices`` (B-VLLM, Uniform, WeightedSampler, ...) is drawn from the model's
``info`` (:meth:`lit_bvllm.model.VideoLLM.visual_tokens`): ``kept_frames`` (positions in the batch's frames),
``selection`` (the rows S of Eq. 1) and ``group_sizes`` (Eq. 2-5) where the reducer has them, ``spatial_attention``
where it records it. Used by :class:`lit_bvllm.training.callbacks.SelectionFigures` (TensorBoard) and by
``lit_bvllm show-selection`` (a PNG for one video and one question, :func:`show_selection`).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from datamodules.benchmarks.selection import in_spans

KEPT = "#ff7f0e"
NEEDLE = "#d62728"


def sample_info(info: dict, b: int) -> dict:
    """Sample ``b``'s part of a batch ``info`` (tensors indexed on their first dim, moved to the CPU)."""
    return {k: v[b].detach().cpu() for k, v in info.items() if isinstance(v, Tensor) and v.dim() > 0 and len(v) > b}


def for_display(frames: Tensor | np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` floats in [0, 1] from uint8 frames (``(T, H, W, 3)`` decoded or ``(T, 3, H, W)`` resized) or
    normalised tower input ``(T, 3, H, W)`` (stretched back to [0, 1] over the whole clip, so the frames keep their
    relative brightness)."""
    x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, Tensor) else frames)
    raw = x.dtype == torch.uint8  # decoded frames, or the data modules' resized ones
    x = x.float()
    if x.dim() == 4 and x.shape[1] == 3 and x.shape[-1] != 3:
        x = x.permute(0, 2, 3, 1)
    if raw:
        return (x / 255.0).clamp(0, 1).numpy()
    lo, hi = (x.min(), x.max()) if x.numel() else (0.0, 1.0)
    return ((x - lo) / max(float(hi - lo), 1e-6)).numpy()


def kept_slots(info: dict) -> list[dict]:
    """One record per kept slot of a sample's ``info`` (in the reducer's order): ``frame`` (position in the
    frames), ``weight`` (the slot's peak selection weight; 1.0 without a selection), ``group`` (selections merged
    into it; 1 without merging) and ``attention`` (``(N,)`` mean spatial attention, or None)."""
    kept = info.get("kept_frames")
    if kept is None:
        return []
    selection, groups, attention = info.get("selection"), info.get("group_sizes"), info.get("spatial_attention")
    slots = []
    for j, frame in enumerate(kept.tolist()):
        if frame < 0:
            continue
        slots.append({
            "slot": j, "frame": frame,
            "weight": float(selection[j].max()) if selection is not None and j < len(selection) else 1.0,
            "group": int(groups[j]) if groups is not None and j < len(groups) else 1,
            "attention": attention[j].float().mean(0) if attention is not None and j < len(attention) else None,
        })
    return slots


def selection_figure(frames, times, info: dict, question: str, answer: str | None = None,
                     needle_times: list[list[float]] | None = None, columns: int = 16,
                     options: list[str] | None = None, correct: int | None = None):
    """A matplotlib Figure of one sample: top, every sampled frame (``frames``: ``(T, H, W, 3)`` uint8 or tower input
    ``(T, 3, H, W)``; ``times`` seconds) in rows of ``columns``, the kept ones outlined and labelled ``w`` (weight)
    and ``g`` (merge group size), frames inside ``needle_times`` marked; bottom, every kept frame with its spatial
    attention over it. The title holds the question, its ``options`` (the ``correct`` one marked) and the model's
    ``answer``, and a legend of the marks. ``info``: one sample's (:func:`sample_info`)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    images = for_display(frames)
    times = [float(t) for t in (times.tolist() if hasattr(times, "tolist") else times)]
    T = len(images)
    slots = kept_slots(info)
    by_frame: dict[int, list[dict]] = {}
    for s in slots:
        by_frame.setdefault(s["frame"], []).append(s)
    spans = needle_times or []
    rows = max(1, math.ceil(T / columns))
    detail = len(slots)
    detail_cols = min(max(detail, 1), 8)
    detail_rows = math.ceil(detail / detail_cols) if detail else 0
    fig = plt.figure(figsize=(columns * 0.9, rows * 1.05 + detail_rows * 2.0 + 1.2), dpi=100)
    grid = fig.add_gridspec(rows + detail_rows * 2, max(columns, detail_cols * 2), hspace=0.5, wspace=0.08)
    for t in range(T):
        ax = fig.add_subplot(grid[t // columns, t % columns])
        ax.imshow(images[t], interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        needle = bool(in_spans([times[t]], spans).any())  # [start, end), as the hit rate counts
        label = f"{times[t]:.1f}s" + (" N" if needle else "")
        for side in ax.spines.values():
            side.set_edgecolor(NEEDLE if needle else "#bbbbbb")
            side.set_linewidth(1.5 if needle else 0.5)
        if t in by_frame:
            h, w = images[t].shape[:2]
            ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor=KEPT, linewidth=3))
            s = by_frame[t]
            label += f"\nw{max(x['weight'] for x in s):.2f} g{sum(x['group'] for x in s)}"
        ax.set_title(label, fontsize=8, color=KEPT if t in by_frame else ("black" if not needle else NEEDLE), pad=1)
    for k, s in enumerate(slots):  # the kept frames, larger, with where the spatial sampler looked
        r, c = divmod(k, detail_cols)
        ax = fig.add_subplot(grid[rows + 2 * r: rows + 2 * r + 2, 2 * c: 2 * c + 2])
        img = images[s["frame"]] if s["frame"] < T else np.zeros((2, 2, 3))
        ax.imshow(img, interpolation="nearest")
        if s["attention"] is not None and s["attention"].numel():
            n = s["attention"].numel()
            side = int(round(math.sqrt(n)))
            if side * side == n:
                heat = s["attention"].reshape(side, side).numpy()
                ax.imshow(heat, cmap="inferno", alpha=0.55, extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5),
                          interpolation="bilinear")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"slot {s['slot']}: {times[s['frame']]:.1f}s, w{s['weight']:.2f} g{s['group']}", fontsize=7)
    title = f"Q: {question.strip()}"
    if options:
        title += "\n" + "   ".join(f"({chr(65 + k)}) {o}" + (" [right]" if k == correct else "")
                                   for k, o in enumerate(options))
    title += f"\nmodel: {answer.strip()}" if answer is not None else ""
    title += (f"\n{len(slots)} kept of {T} frames. Outlined: kept; N: inside a needle's span; w: the slot's selection "
              "weight (Eq. 1); g: selections merged into it (Eq. 2-5)")
    fig.suptitle(title, fontsize=9, ha="left", x=0.01)
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG (folders created) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


@contextmanager
def recording_attention(reducer):
    """Within the block, a reducer with ``record_attention`` (B-VLLM's spatial Q-Former) puts its maps in ``info``;
    the flag is restored after it, exception or not."""
    before = getattr(reducer, "record_attention", None)
    if before is None:
        yield
        return
    reducer.record_attention = True
    try:
        yield
    finally:
        reducer.record_attention = before


@torch.no_grad()
def show_selection(model, video: str, question: str, out: str | Path, options: list[str] | None = None,
                   vision_tower: str | None = None, transform: str = "processor", fps: float = 1.0,
                   max_frames: int | None = 128, question_tokenizer: str | None = None,
                   needle_times: list[list[float]] | None = None) -> dict:
    """Ask ``model`` (a :class:`~lit_bvllm.model.VideoLLM`) ``question`` about ``video`` the way ``lit_bvllm test``
    does (frames at ``fps``, the question as the user turn; with ``options``, VNBench's bracketed options and letter
    instruction), draw what its reducer kept (:func:`selection_figure`) to ``out`` (PNG) and return the answer, the
    kept frames' times and the figure's path."""
    from datamodules.benchmarks.datamodule import BenchmarkCollator, BenchmarkDataset
    from datamodules.benchmarks.items import EvalItem
    from datamodules.benchmarks.vnbench import VNBench
    from datamodules.loading import load_tokenizer
    from datamodules.transforms import FrameTransform
    from datamodules.video import FrameSampling, read_video

    class OneQuestion(VNBench):  # VNBench's prompt for a question with options; the bare question otherwise
        def template(self, q: str, opts: list[str]) -> str:
            return super().template(q, opts) if opts else q

        def prompt(self, item, subtitles=None) -> str:
            return self.template(item.question, item.options)

    item = EvalItem(id="question", video=str(Path(video).resolve()), question=question, options=list(options or []),
                    answer=-1,
                    extra={"needle_times": needle_times} if needle_times else {})  # evidence: the oracle pick
    frame_transform = FrameTransform(transform, vision_tower or model.config["vision_tower"], normalize=False)
    qtok = load_tokenizer(question_tokenizer, None) if question_tokenizer else None
    data = BenchmarkDataset([item], OneQuestion(str(Path(video).resolve().parent)), model.tokenizer, frame_transform,
                            "generate", FrameSampling("fps", fps, max_frames=max_frames), qtok,
                            video_token=model.config["video_token"], allow_outside_root=True)
    sample = data[0]
    if sample["meta"]["error"]:
        raise FileNotFoundError(f"--video '{video}': {sample['meta']['error']}")
    collate = BenchmarkCollator(model.tokenizer.pad_token_id, frame_transform.image_size, "generate",
                                None if qtok is None else qtok.pad_token_id)
    device = next(model.parameters()).device
    batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in collate([sample]).items()}
    model.eval()
    with recording_attention(model.reducer):
        answers, info = model.generate(batch, return_info=True)
    raw, times, _ = read_video(item.video, FrameSampling("fps", fps, max_frames=max_frames))
    one = sample_info(info, 0)
    path = save_figure(selection_figure(raw, times, one, question, answers[0], needle_times,
                                        options=list(options or []) or None), out)
    kept = [float(times[s["frame"]]) for s in kept_slots(one)]
    return {"answer": answers[0], "kept_times": kept, "figure": str(path)}

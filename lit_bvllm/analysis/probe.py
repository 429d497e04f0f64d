"""Linear probes of a vision tower on synthetic frames: does its [CLS] token see the needle?

``lit_bvllm probe-tower --vision_tower DIR --data DIR`` decodes the synthetic set's training videos (probe fit)
and held-out eval videos (probe test) at 1 fps through the suite's own reader and frame transform, encodes the
frames with the tower at ``feature_layer`` (-2, the layer the video LLM reads) and fits linear probes (multinomial
logistic regression, L2, full-batch L-BFGS) on three feature sets:

- ``cls``: the [CLS] token (what B-VLLM selects frames from, §3.2),
- ``mean_patch``: the mean of the patch tokens,
- ``patches``: all patch tokens, concatenated;

for three labels from the generator's metadata (``metadata.json``): needle present (recall and precision on the
needle class), the needle's shape and its colour (accuracy on needle frames only). Prints a table and writes it
as JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from datamodules.io import write_json
from datamodules.transforms import FrameTransform
from datamodules.video import FrameSampling, read_video
from lit_bvllm.vision import VisionEncoder
from lit_bvllm.world.scenes import BACKGROUNDS, NEEDLE_COLOURS, NEEDLE_SHAPES

FEATURES = ("cls", "mean_patch", "patches")


def frame_labels(record: dict, times: np.ndarray) -> dict[str, np.ndarray]:
    """Per decoded frame (at ``times`` seconds): ``needle`` (0/1), ``shape`` and ``colour`` indices (-1 without a
    needle) and, when the record has a background, its (first) colour's index in ``BACKGROUNDS``. A frame shows a
    needle when its time lies in ``[start, end)`` (the renderer's rule)."""
    needle = np.zeros(len(times), np.int64)
    shape = np.full(len(times), -1, np.int64)
    colour = np.full(len(times), -1, np.int64)
    for n in record["needles"]:
        on = (times >= n["start"]) & (times < n["end"])
        needle[on] = 1
        shape[on] = NEEDLE_SHAPES.index(n["shape"])
        colour[on] = list(NEEDLE_COLOURS).index(n["colour"])
    out = {"needle": needle, "shape": shape, "colour": colour}
    if "background" in record:
        out["background"] = np.full(len(times), list(BACKGROUNDS).index(record["background"]["colours"][0]), np.int64)
    return out


@torch.no_grad()
def encode_videos(records: list[dict], root: Path, encoder, transform, fps: float = 1.0, max_frames: int | None = None,
                  tokens: bool = False):
    """``(features {name: (n, F)}, labels {name: (n,)})`` of every frame sampled from ``records`` at ``fps``; with
    ``tokens`` the features also hold ``tokens (n, 1 + N, D)``, each frame's [CLS] and patch tokens (for probing a
    module that reads them, such as a Q-Former)."""
    feats: dict[str, list[Tensor]] = {k: [] for k in (*FEATURES, "tokens") if k != "tokens" or tokens}
    labels: dict[str, list[np.ndarray]] = {}
    for record in records:  # one video per tower call (its frames batched); probing, not a forward pass
        frames, times, _ = read_video(str(root / record["path"]), FrameSampling("fps", fps, max_frames=max_frames))
        pixels = transform(frames)[None]  # (1, T, 3, S, S)
        mask = torch.ones(pixels.shape[:2], dtype=torch.bool)
        enc = encoder(pixels, mask, mask)
        patches = enc["frames"][0].float()  # (T, N, D)
        feats["cls"].append(enc["cls"][0].float())
        feats["mean_patch"].append(patches.mean(1))
        feats["patches"].append(patches.flatten(1))
        if tokens:
            feats["tokens"].append(torch.cat([enc["cls"][0].float()[:, None], patches], 1))  # (T, 1 + N, D)
        for k, v in frame_labels(record, np.asarray(times)).items():
            labels.setdefault(k, []).append(v)
    return ({k: torch.cat(v) for k, v in feats.items()}, {k: np.concatenate(v) for k, v in labels.items()})


def fit_probe(x: Tensor, y: Tensor, num_classes: int, l2: float = 1e-3, steps: int = 100) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression ``(W, b)`` on standardised ``x`` (full-batch L-BFGS, class-balanced loss)."""
    w = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    counts = torch.bincount(y, minlength=num_classes).float()
    weight = (counts.sum() / (num_classes * counts.clamp_min(1))).clamp(max=10.0)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y, weight=weight) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _standardise(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def frame_share(x: Tensor) -> float:
    """The share of the features' energy that varies from frame to frame: ``sum of per-feature variances over
    frames / mean squared norm`` of ``x (n, F)`` (0: every frame gets the same vector; a randomly initialised
    Q-Former's query outputs are close to 0, its learned queries dominating them)."""
    x = x.double()
    return float(x.var(0, correction=0).sum() / x.pow(2).sum(1).mean().clamp_min(1e-12))


def probe_row(train_x: Tensor, train_y: dict, test_x: Tensor, test_y: dict, background: bool = False,
              standardise: bool = True) -> dict[str, float]:
    """One feature set ``(n, F)``: needle presence (recall, precision, accuracy), shape and colour accuracy on needle
    frames and, with ``background``, background-colour accuracy on every frame. With ``standardise=False`` the
    probes see the raw features (same L2 penalty): content that a small share of the features' scale carries then
    needs large weights and is penalised, as it is for a projector learning to read it."""
    xtr, xte = _standardise(train_x, test_x) if standardise else (train_x.float(), test_x.float())
    row = {}
    if background:
        w, b = fit_probe(xtr, torch.from_numpy(train_y["background"]), len(BACKGROUNDS))
        row["background_accuracy"] = float(
            ((xte @ w + b).argmax(1) == torch.from_numpy(test_y["background"])).float().mean())
    ytr, yte = torch.from_numpy(train_y["needle"]), torch.from_numpy(test_y["needle"])
    w, b = fit_probe(xtr, ytr, 2)
    pred = (xte @ w + b).argmax(1)
    tp = int(((pred == 1) & (yte == 1)).sum())
    row["needle_recall"] = tp / max(1, int((yte == 1).sum()))
    row["needle_precision"] = tp / max(1, int((pred == 1).sum()))
    row["needle_accuracy"] = float((pred == yte).float().mean())
    for label, classes in (("shape", len(NEEDLE_SHAPES)), ("colour", len(NEEDLE_COLOURS))):
        on_tr, on_te = train_y[label] >= 0, test_y[label] >= 0
        w, b = fit_probe(xtr[torch.from_numpy(on_tr)], torch.from_numpy(train_y[label][on_tr]), classes)
        pred = (xte[torch.from_numpy(on_te)] @ w + b).argmax(1)
        row[f"{label}_accuracy"] = float((pred == torch.from_numpy(test_y[label][on_te])).float().mean())
    return {k: round(v, 3) for k, v in row.items()}


def run_probes(train_x: dict[str, Tensor], train_y: dict, test_x: dict[str, Tensor], test_y: dict) -> dict:
    """Needle presence (recall, precision, accuracy), shape and colour accuracy on needle frames, per feature set."""
    return {name: probe_row(train_x[name], train_y, test_x[name], test_y) for name in FEATURES}


def table(result: dict) -> str:
    """The probe results as a Markdown table, one row per feature set."""
    cols = ("needle_recall", "needle_precision", "needle_accuracy", "shape_accuracy", "colour_accuracy")
    lines = ["| features | " + " | ".join(c.replace("_", " ") for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name in FEATURES:
        lines.append(f"| {name} | " + " | ".join(f"{result['probes'][name][c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def probe_tower(vision_tower: str, data: str, out: str | None = None, feature_layer: int = -2, fps: float = 1.0,
                max_frames: int | None = 128, max_videos: int | None = None, transform: str = "processor") -> dict:
    """Linear probes of a vision tower's [CLS] and patch tokens for needle presence, shape and colour.

    Args:
        vision_tower: local folder of the tower (a CLIP / SigLIP checkpoint, or ``make-tiny``'s ``vision``).
        data: a ``make-synthetic`` folder (its ``metadata.json``): training videos fit the probes, the held-out eval
            videos test them.
        out: JSON file to write (default: ``<data>/probe_<tower folder name>.json``).
        feature_layer: the tower layer probed (-2: the one the video LLM reads).
        fps: frames per second sampled from each video (mid-second, as in training and evaluation).
        max_frames: the most frames taken from one video (uniformly thinned beyond it).
        max_videos: use at most this many training and this many eval videos (quick checks).
        transform: ``processor`` (the tower's image processor) or ``plain``.
    """
    t0 = time.time()
    root = Path(data)
    meta_path = root / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"--data '{root}' has no metadata.json; "
                                "point it at a `lit_bvllm make-synthetic --out DIR` folder")
    videos = json.loads(meta_path.read_text())["videos"]
    train = [r for r in videos if r["split"] == "train"][:max_videos]
    test = [r for r in videos if r["split"] == "eval"][:max_videos]
    if not train or not test:
        raise ValueError(f"{meta_path} needs training and eval videos (found {len(train)} and {len(test)})")
    encoder = VisionEncoder(vision_tower, feature_layer)
    tf = FrameTransform(transform, vision_tower)
    train_x, train_y = encode_videos(train, root, encoder, tf, fps, max_frames)
    test_x, test_y = encode_videos(test, root, encoder, tf, fps, max_frames)
    for split, y in (("train", train_y), ("test", test_y)):
        if y["needle"].sum() == 0 or (y["needle"] == 0).sum() == 0:
            raise ValueError(f"the {split} frames of {root} hold only one class of needle presence; use more videos")
    result = {
        "vision_tower": str(vision_tower),
        "data": str(root),
        "feature_layer": feature_layer,
        "fps": fps,
        "frames": {"train": len(train_y["needle"]), "test": len(test_y["needle"])},
        "needle_frames": {"train": int(train_y["needle"].sum()), "test": int(test_y["needle"].sum())},
        "videos": {"train": len(train), "test": len(test)},
        "test_always_no_accuracy": round(float((test_y["needle"] == 0).mean()), 3),
        "probes": run_probes(train_x, train_y, test_x, test_y),
    }
    result["seconds"] = round(time.time() - t0, 1)
    path = Path(out) if out else root / f"probe_{Path(vision_tower).resolve().name}.json"
    write_json(path, result)
    print(f"linear probes of {vision_tower} (layer {feature_layer}), {result['frames']['train']} training / "
          f"{result['frames']['test']} held-out frames ({result['needle_frames']['test']} with a needle; always 'no': "
          f"{result['test_always_no_accuracy']:.3f} accuracy):\n{table(result)}\nwritten to {path}")
    return result

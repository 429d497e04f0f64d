"""Frame sampling (fps with a uniform cap, uniform, windows), decoding synthetic videos with decord, and the header
checks that keep hostile files away from decord and PIL."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from bad_media import write_png_header, write_spaced_mkv

from datamodules import video
from datamodules.errors import SampleError
from datamodules.transforms import FrameTransform
from datamodules.video import FrameSampling, read_image, read_video, sample_times, times_to_indices


def test_fps_mode_takes_the_middle_of_each_second():
    np.testing.assert_allclose(sample_times(10.0), np.arange(10) + 0.5)
    assert len(sample_times(10.3)) == 10 and len(sample_times(10.6)) == 11
    assert len(sample_times(0.2)) == 1  # a very short clip still gives a frame
    np.testing.assert_allclose(sample_times(4.0, fps=2.0), [0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75])


def test_max_frames_thins_uniformly_over_the_whole_video():
    t = sample_times(3600.0, max_frames=64)
    assert len(t) == 64
    assert t[0] == 0.5 and t[-1] == 3599.5  # covers the end, not only the first 64 seconds
    gaps = np.diff(t)
    assert gaps.max() - gaps.min() <= 1.0


def test_uniform_mode_midpoints_and_window():
    np.testing.assert_allclose(sample_times(16.0, "uniform", num_frames=4), [2, 6, 10, 14])
    np.testing.assert_allclose(sample_times(100.0, "uniform", num_frames=2, start=10, end=20), [12.5, 17.5])
    np.testing.assert_allclose(sample_times(100.0, start=10, end=13), [10.5, 11.5, 12.5])
    with pytest.raises(SampleError, match="window"):
        sample_times(10.0, start=12, end=15)


def test_indices_are_distinct_and_clipped():
    assert times_to_indices(np.array([0.1, 0.2, 0.9, 5.0]), native_fps=4, num_frames=8).tolist() == [0, 3, 7]


def _train_videos(root):
    meta = json.loads((root / "metadata.json").read_text())
    return [r for r in meta["videos"] if r["split"] == "train"]


def test_one_frame_per_second_of_a_synthetic_video(synthetic):
    rec = _train_videos(synthetic)[0]
    assert rec["fps"] > 1  # encoded above 1 fps, so 1-fps sampling really drops frames
    frames, times, duration = read_video(str(synthetic / rec["path"]))
    assert duration == pytest.approx(rec["duration"])
    assert frames.shape == (rec["duration"], rec["height"], rec["width"], 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(times, np.floor((np.arange(rec["duration"]) + 0.5) * rec["fps"]) / rec["fps"])


DECODER_TOLERANCE = 2
"""Largest difference (of 255) allowed between decord's and torchcodec's frames: both convert the same H.264
frames from YUV; measured 0 (bit-identical) on the synthetic set, FFmpeg 5.1 under torchcodec 0.13."""


def test_torchcodec_gives_decords_frames_at_the_same_times(synthetic):
    """The second decoder (--data.decoder torchcodec): the same frame count, duration and times for every sampling
    mode, the same pixels within DECODER_TOLERANCE; a missing or hostile file is the same SampleError."""
    records = _train_videos(synthetic)[:12]
    diffs = []
    for k, rec in enumerate(records):
        sampling = [FrameSampling("fps", 1.0, max_frames=8), FrameSampling("uniform", num_frames=5)][k % 2]
        a = read_video(str(synthetic / rec["path"]), sampling, decoder="decord")
        b = read_video(str(synthetic / rec["path"]), sampling, decoder="torchcodec")
        assert a[0].shape == b[0].shape and b[0].dtype == np.uint8 and len(a[0]) > 1
        np.testing.assert_array_equal(a[1], b[1])
        assert a[2] == b[2] == pytest.approx(rec["duration"])
        diffs.append(np.abs(a[0].astype(np.int16) - b[0].astype(np.int16)).max())
    assert max(diffs) <= DECODER_TOLERANCE, diffs
    assert video.probe_video(str(synthetic / records[0]["path"]), "torchcodec") == (
        video.probe_video(str(synthetic / records[0]["path"]), "decord"))
    with pytest.raises(SampleError, match="missing_file"):
        read_video(str(synthetic / "nope.mp4"), decoder="torchcodec")
    with pytest.raises(ValueError, match="--data.decoder must be one of"):
        read_video(str(synthetic / records[0]["path"]), decoder="opencv")


def test_decoded_frames_are_the_rendered_frames_at_their_times(synthetic):
    """Each decoded frame is the frame the generator rendered for its time, not a neighbour: against the
    rendered ground truth (this compared decord with decord before, which could not catch an index off by one)."""
    from lit_bvllm.world.render import render_frames

    rec = _train_videos(synthetic)[1]
    frames, times, _ = read_video(str(synthetic / rec["path"]), FrameSampling("uniform", num_frames=5))
    rendered = np.stack(list(render_frames(rec))).astype(np.float32)
    idx = np.round(times * rec["fps"]).astype(int)
    for frame, i in zip(frames.astype(np.float32), idx):
        error = np.abs(rendered - frame).mean(axis=(1, 2, 3))  # against every rendered frame
        assert error[i] < 4.0, (i, error[i])  # H.264 at CRF 18: a few levels of error
        assert error[i] == error.min()  # its own frame, and no other, is the closest (distractors move)


def test_window_and_uniform_on_a_video(synthetic):
    rec = _train_videos(synthetic)[0]
    path = str(synthetic / rec["path"])
    frames, times, _ = read_video(path, start=2, end=5)
    assert len(frames) == 3 and times.min() >= 2 and times.max() < 5
    frames, times, _ = read_video(path, FrameSampling("uniform", num_frames=6))
    assert len(frames) == 6 and np.all(np.diff(times) > 0)


def test_image_is_a_one_frame_video(synthetic):
    meta = json.loads((synthetic / "metadata.json").read_text())
    img = read_image(str(synthetic / meta["images"][0]["path"]))
    assert img.shape[0] == 1 and img.shape[-1] == 3


@pytest.mark.parametrize("mode", ["crop", "pad", "squash"])
def test_plain_transform_shapes_and_normalisation(mode):
    tf = FrameTransform("plain", image_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_mode=mode)
    white = np.full((3, 24, 40, 3), 255, np.uint8)
    out = tf(white)
    assert out.shape == (3, 3, 16, 16) and out.dtype.is_floating_point
    if mode != "pad":
        assert torch_allclose(out, 1.0)
    else:  # padded bands hold the mean colour, i.e. 0 after normalisation
        assert out[:, :, 0].abs().max() < 0.05 and out[:, :, 8].min() > 0.95
    assert tf(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, 3, 16, 16)


@pytest.mark.parametrize("mode", ["crop", "pad", "squash"])
def test_plain_transform_resizes_bytes_as_bytes_within_one_level_of_the_float_path(mode):
    """The workers' uint8 output is resized by torch's uint8 kernel, not through float32 and back: the same picture
    (within one grey level of the float path, rounded) and the pad bands hold the mean colour as bytes."""
    rng = np.random.default_rng(0)
    frames = (rng.random((5, 36, 60, 3)) * 255).astype(np.uint8)
    kw = dict(image_size=16, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28), resize_mode=mode)
    as_bytes = FrameTransform("plain", normalize=False, **kw)(frames)
    tf = FrameTransform("plain", **kw)
    as_floats = (tf(frames) * tf.std + tf.mean).mul(255).round().clamp(0, 255)  # the float path, back to levels
    assert as_bytes.dtype == torch.uint8 and as_bytes.shape == (5, 3, 16, 16) and as_bytes.is_contiguous()
    assert (as_bytes.float() - as_floats).abs().max() <= 1
    if mode == "pad":  # a 36x60 frame padded to 60x60: top rows are the mean colour
        assert as_bytes[:, :, 0, 8].tolist() == [[122, 117, 105]] * 5


def test_plain_bytes_are_the_processors_bytes_at_clip_l_scale(tmp_path):
    """A CLIP-L/14-336 processor (shortest side to 336, centre crop) on 768x576 frames: the plain policy's uint8
    output is the processor's (PIL) within 2 grey levels, almost everywhere within 1 (benchmarks/RESULTS.md)."""
    from transformers import CLIPImageProcessor

    CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(tmp_path)
    rng = np.random.default_rng(0)
    blocks = (rng.random((2, 12, 16, 3)) * 255).astype(np.uint8)  # a picture with edges, plus sensor noise
    frames = np.kron(blocks, np.ones((1, 48, 48, 1), np.uint8)).astype(int) + rng.integers(-10, 10, (2, 576, 768, 3))
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    hf = FrameTransform("processor", str(tmp_path), normalize=False)(frames).int()
    plain = FrameTransform("plain", str(tmp_path), normalize=False)(frames).int()
    assert hf.shape == plain.shape == (2, 3, 336, 336)
    diff = (hf - plain).abs()
    assert diff.max() <= 2 and (diff > 1).float().mean() < 0.01 and diff.float().mean() < 0.3


def torch_allclose(t, value):
    return bool((t - value).abs().max() < 1e-3)


def test_processor_and_plain_policies_agree(tiny):
    """Both policies read size, mean, std and the resize rule from the tower's processor, so they feed the same
    input: the tiny CLIP resizes a 4:3 frame to a square without cropping, as SigLIP does."""
    rng = np.random.default_rng(0)
    frames = (rng.random((2, 48, 64, 3)) * 255).astype(np.uint8)
    hf = FrameTransform("processor", tiny["vision"])(frames)
    plain = FrameTransform("plain", tiny["vision"])
    assert plain.resize_mode == "squash"
    out = plain(frames)
    assert hf.shape == out.shape == (2, 3, 32, 32)
    assert (hf - out).abs().mean() < 0.1  # PIL vs torch bicubic differ slightly
    cropped = FrameTransform("plain", tiny["vision"], resize_mode="crop")(frames)
    assert (hf - cropped).abs().mean() > (hf - out).abs().mean()  # the crop policy would feed another picture


# ---------------------------------------------------------------- hostile media (issue 10, points 6 and 7)


def test_a_decompression_bomb_is_bad_image_without_decoding(tmp_path):
    bomb = write_png_header(tmp_path / "bomb.png", 30000, 30000)
    assert bomb.stat().st_size < 100
    with pytest.raises(SampleError) as err:
        read_image(str(bomb))
    assert (err.value.reason, err.value.field) == ("bad_image", "image")
    assert str(bomb) in err.value.detail and "900000000 pixels" in err.value.detail  # PIL's own refusal, named
    # under PIL's own refusal (2 x 89M pixels) but over the limit: refused too, before any pixel is decoded
    with pytest.raises(SampleError, match="bad_image.*10000x10000"):
        read_image(str(write_png_header(tmp_path / "big.png", 10000, 10000)))
    with pytest.raises(SampleError) as err:  # a frame folder names its field 'video'
        read_video(str(bomb.parent), FrameSampling(max_frames=4))
    assert (err.value.reason, err.value.field) == ("bad_image", "video")


@pytest.mark.parametrize(
    "header, problem",
    [
        ((64, 48, 30.0, 300, 10.0), None),
        ((64, 48, 30.0, 30 * 86400, 86400.0), None),  # a day at 30 fps: within every limit
        ((64, 48, 25.0, 10, 9e10), "duration of 9e+10 s"),
        ((64, 48, 1e6, 1e7, 10.0), "1e+06 frames per second"),
        ((64, 48, 0.0, 10, 10.0), "declares 0 frames per second"),
        ((64, 48, float("nan"), 10, 10.0), "nan frames per second"),
        ((64, 48, 500.0, 2e7, 40000.0), "2e+07 frames"),
        ((60000, 48, 30.0, 300, 10.0), "60000x48 pixels"),
        ((0, 0, 30.0, 300, 10.0), "0x0 pixels"),
    ],
)
def test_container_limits(header, problem):
    got = video.container_problem(*header)
    assert got is None if problem is None else problem in got


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A 2 KB Matroska file named .mp4 whose 10 frames are 1e10 s apart."""
    return str(write_spaced_mkv(tmp_path_factory.mktemp("hostile") / "hostile.mp4", gap_s=1e10))


def test_the_hostile_container_kills_decord(hostile):
    """The fixture is what the issue describes: decord alone aborts the whole process on it (SIGABRT)."""
    run = subprocess.run([sys.executable, "-c",
                          "import decord, sys; decord.VideoReader(sys.argv[1], num_threads=1)", hostile],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGABRT and "bad_alloc" in run.stderr


def test_the_header_check_refuses_the_hostile_container_before_decord(hostile, monkeypatch):
    import decord

    opened = []
    monkeypatch.setattr(decord, "VideoReader", lambda *a, **k: opened.append(a) or pytest.fail("decord opened it"))
    for read in (lambda: read_video(hostile), lambda: video.probe_video(hostile)):
        with pytest.raises(SampleError) as err:
            read()
        assert (err.value.reason, err.value.field) == ("bad_container", "video")
        assert hostile in err.value.detail and "duration of 9e+10 s" in err.value.detail
    assert opened == []


def test_the_header_check_passes_real_videos_and_costs_little(synthetic):
    import time

    paths = [str(synthetic / r["path"]) for r in _train_videos(synthetic)]
    t0 = time.perf_counter()
    for p in paths:
        video.check_container(p)  # raises on a problem
    probe = (time.perf_counter() - t0) / len(paths)
    t0 = time.perf_counter()
    for p in paths:
        read_video(p, FrameSampling(max_frames=16))
    decode = (time.perf_counter() - t0) / len(paths)
    assert probe < 0.25 * decode  # measured: about 0.6 ms against 27 ms


def test_a_file_pyav_cannot_open_is_a_decode_error(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(SampleError) as err:
        video.check_container(str(garbage))
    assert err.value.reason == "decode_error" and str(garbage) in err.value.detail


def test_frame_sampling_is_one_value_checked_where_it_is_made():
    """The four frame flags travel as one FrameSampling (they were repeated through six signatures); a bad one is
    refused where it is built, naming the flag, not on the first video read."""
    s = FrameSampling("fps", 2.0, max_frames=3)
    np.testing.assert_allclose(s.times(10.0), sample_times(10.0, "fps", 2.0, max_frames=3))
    np.testing.assert_allclose(FrameSampling("uniform", num_frames=2).times(100.0, 10, 20), [12.5, 17.5])
    for bad, flag in [(dict(mode="every"), "frame_mode"), (dict(fps=0.0), "fps"), (dict(max_frames=0), "max_frames")]:
        with pytest.raises(ValueError, match=f"--data.{flag}"):
            FrameSampling(**bad)

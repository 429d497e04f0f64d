"""The benchmarks' own tools: the peak-memory tracker and the length benchmark's batch."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_length import at_length  # noqa: E402
from bench_memory import bvllm_spec  # noqa: E402
from peak_memory import peak_memory  # noqa: E402

MIB = 2**20


def test_the_peak_counts_what_lives_at_once_and_a_frozen_model_is_fine():
    model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 512))  # 2 MiB of parameters
    model[0].requires_grad_(False)  # a frozen layer beside a trainable one (MemTracker as shipped refuses it)
    params = sum(p.numel() * 4 for p in model.parameters()) / MIB

    def work():
        a = torch.ones(16 * MIB // 4)  # 16 MiB, freed before the next two
        del a
        b, c = torch.ones(8 * MIB // 4), torch.ones(4 * MIB // 4)  # 12 MiB at once
        model(torch.ones(4, 512)).sum().backward()
        return float(b[0] + c[0])

    out, peak = peak_memory(work, model)
    assert out == 2.0
    assert params + 16 <= peak["total"] < params + 16 + 1, peak  # the 16 MiB tensor, not 16 + 12
    assert abs(peak["param"] - params) < 1e-3


def test_the_peak_counts_a_module_run_twice_in_one_call():
    """B-VLLM's two evaluation passes run the vision tower twice in one forward; MemTracker as shipped refused it."""
    model = torch.nn.Linear(512, 512)

    def work():
        a = model(torch.ones(2048, 512))  # 4 MiB out
        b = model(torch.ones(4096, 512))  # 8 MiB out, a still alive
        return float(a.sum() + b.sum()) * 0

    out, peak = peak_memory(work, model)
    assert out == 0.0 and peak["total"] >= 1 + 4 + 8, peak


def test_a_batch_at_length_loops_each_videos_own_frames():
    frames = torch.arange(2 * 3, dtype=torch.uint8).view(2, 3, 1, 1, 1).expand(2, 3, 3, 2, 2).clone()
    batch = {"frames": frames, "frame_mask": torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool), "x": 1}
    out = at_length(batch, 7)
    assert out["frames"].shape == (2, 7, 3, 2, 2) and out["frame_mask"].all() and out["x"] == 1
    assert out["frames"][0, :, 0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert out["frames"][1, :, 0, 0, 0].tolist() == [3, 4, 3, 4, 3, 4, 3]  # the padding slot is never used
    assert out["frame_times"][1].tolist() == list(range(7))


def test_the_memory_benchmark_builds_the_papers_bvllm(tiny):
    """bench_memory built bvllm.yaml's reducer as written, without the question vocabulary the CLI links in since
    vocab_size defaults to None: every point failed at construction."""
    from lit_bvllm.backbones import load_tokenizer
    from lit_bvllm.model import reducer_factory

    spec = bvllm_spec(Path(tiny["llm"]))
    assert spec["init_args"]["vocab_size"] == len(load_tokenizer(tiny["llm"], "<video>"))
    reducer = reducer_factory(spec)(64)
    assert reducer.budget == 768 and reducer.num_frames == 32

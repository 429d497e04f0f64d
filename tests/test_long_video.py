"""A 1-hour video at 1 fps (3600 frames) evaluates end to end with the tiny B-VLLM, in bounded memory (slow)."""

import json
import subprocess
import sys
import textwrap

import pytest

LIMIT_GB = 8.0  # far below the 24 GB of the CI machine; the frames alone would be 3600 x 3 x 32 x 32 x 4 B = 44 MB


@pytest.mark.slow
def test_one_hour_video_evaluates_in_bounded_memory(tiny, tmp_path):
    from lit_bvllm.world.render import write_mp4

    root = tmp_path / "long"
    (root / "videos").mkdir(parents=True)
    record = {"id": "hour", "kind": "video", "duration": 3600, "fps": 2, "num_frames": 7200, "width": 64, "height": 48,
              "background": {"colours": ["navy"], "direction": "solid"}, "distractors": [],
              "needles": [{"shape": "star", "colour": "red", "start": 1800, "end": 1802, "position": [32, 24],
                           "size": 16}]}
    write_mp4(record, root / "videos" / "hour.mp4")
    entries = [{"video": "videos/hour.mp4", "question": "Which of these shapes briefly appears in the video?",
                "options": ["a red star", "a blue ring", "a green cross", "a cyan diamond"], "gt": "a red star",
                "type": "ret_insert1", "try": k, "question_id": f"hour_ret_insert1_{k}"} for k in range(2)]
    (root / "VNBench_qa.json").write_text(json.dumps(entries))
    script = textwrap.dedent(f"""
        import functools, json, resource
        import lightning as L
        from datamodules.benchmarks import BenchmarkDataModule, VNBench
        from lit_bvllm.training.callbacks import BenchmarkEvaluation
        from lit_bvllm.training.lit_module import VideoLLMModule
        from lit_bvllm.reducers import BVLLM
        reducer = functools.partial(BVLLM, num_frames=8, num_tokens=8, budget=48, num_queries=8, hidden_size=32,
                                    num_layers=2, num_heads=2, vocab_size=2048)
        model = VideoLLMModule({tiny['llm']!r}, {tiny['vision']!r}, reducer, vision_chunk=64, max_new_tokens=4)
        evaluation = BenchmarkEvaluation()
        dm = BenchmarkDataModule(VNBench({str(root)!r}), {tiny['llm']!r}, vision_tower={tiny['vision']!r},
                                 frame_mode="fps", fps=1.0, max_frames=3600, batch_size=2, num_workers=0)
        trainer = L.Trainer(accelerator="cpu", logger=L.pytorch.loggers.CSVLogger({str(tmp_path)!r}, name="r", version="v"),
                            enable_progress_bar=False, callbacks=[evaluation])
        trainer.test(model, datamodule=dm)
        sample = dm.test_set[0]
        print(json.dumps({{"frames": int(sample["frames"].shape[0]), "evaluated": evaluation.results["evaluated"],
                          "errors": evaluation.results["errors"],
                          "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}}))
    """)  # noqa: E501
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats["frames"] == 3600  # every second of the hour, decoded and encoded (in chunks of 64 frames)
    assert stats["evaluated"] == 2 and stats["errors"] == 0
    print("long-video stats:", stats)
    assert stats["peak_gb"] < LIMIT_GB, stats

"""Shared fixtures: tiny backbones and a small synthetic set built once per session; no network, no hub."""

import os
import socket

from lit_bvllm.cli import setup_process

setup_process()  # as every lit_bvllm process: offline, DeepSpeed's CPU accelerator named (lit_bvllm.cli)
# the suite and the commands it starts keep their thread counts whatever loaders they build
# (datamodules.loading.leave_cores_to_workers would lower this session's for every later test; its test resets it)
os.environ["LIT_BVLLM_THREADS_CHOSEN"] = "1"

import pytest  # noqa: E402

_LOCAL = ("127.", "::1", "localhost", "/")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection to a non-local address fails the test (the suite must never reach a hub)."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if not str(host).startswith(_LOCAL):
            raise AssertionError(f"test tried to reach the network: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("index_cache")
    os.environ["LIT_BVLLM_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def on_tiny(tiny):
    """A shipped reducer spec's ``init_args`` with make-tiny's Q-Former (``artifacts/tiny/qformer``, the configs' path)
    replaced by the tiny fixture's, so that the spec builds on a fresh clone."""

    def args(init_args: dict) -> dict:
        if "qformer" not in init_args:
            return init_args
        assert init_args["qformer"] == "artifacts/tiny/qformer", init_args
        return {**init_args, "qformer": tiny["qformer"]}

    return args


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Tiny backbones written by make-tiny: ``{"vision": dir, "llm": dir, "qformer": dir, ...}``, and ``"flags"``, the
    CLI flags that point a config (pretrain.yaml's Q-Former included) at them."""
    from lit_bvllm.world.tiny import make_tiny

    # a few-step tower, no LM warm-up and a random Q-Former in InstructBLIP's layout: each training has its own
    # tests; the small LLM keeps the suite fast
    out = make_tiny(tmp_path_factory.mktemp("tiny"), lm_steps=0, copy_steps=0, clip_steps=3, clip_batch_size=32,
                    qformer_steps=0, llm_width=64, num_layers=2)
    out["flags"] = ["--model.llm", out["llm"], "--model.vision_tower", out["vision"],
                    "--model.reducer.init_args.qformer", out["qformer"]]
    return out


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """A small synthetic set (4 training videos of 8-12 s, 4 eval videos)."""
    from lit_bvllm.world import make_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, seed=0, num_videos=4, num_eval_videos=4, max_duration=12)
    return root


@pytest.fixture(scope="session")
def tokenizer(tiny):
    from lit_bvllm.backbones import load_tokenizer

    return load_tokenizer(tiny["llm"])


@pytest.fixture(scope="session")
def eval_model(tiny):
    """An untrained tiny video LLM for evaluation tests (2 uniform frames, 32 visual tokens, answers of up to 4
    tokens); shared, so a test must not train or change it."""
    import functools

    from lit_bvllm.reducers import Uniform
    from lit_bvllm.training.lit_module import VideoLLMModule

    m = VideoLLMModule(tiny["llm"], tiny["vision"], functools.partial(Uniform, num_frames=2, budget=32),
                       max_new_tokens=4)
    m.configure_model()
    return m.eval()

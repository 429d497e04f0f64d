"""Deterministic synthetic video dataset: H.264 videos with timed "needle" shapes, train and eval annotations."""

from lit_bvllm.world.generate import make_synthetic

__all__ = ["make_synthetic"]

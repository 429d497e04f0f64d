"""A training step whose loss is NaN or inf is skipped with its sample ids logged; a run of them stops the fit."""

import lightning as L
import pytest
import torch
from helpers import data, small_module

from lit_bvllm import reducers


def poisoned(tiny, bad_calls, **kw):
    """A module whose projector output turns NaN on the given forward calls (0-based)."""
    module = small_module(tiny, reducer=reducers.Uniform, lr=1e-2, **kw)
    module.configure_model()
    calls = {"n": 0}

    def hook(_, __, out):
        calls["n"] += 1
        return out * float("nan") if calls["n"] - 1 in bad_calls else out

    module.model.projector.register_forward_hook(hook)
    return module


def fit(module, tiny, synthetic, tmp_path, steps):
    trainer = L.Trainer(default_root_dir=tmp_path, max_steps=steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, use_distributed_sampler=False)
    trainer.fit(module, datamodule=data(tiny, synthetic))
    return trainer


def test_a_nonfinite_step_is_skipped_and_its_samples_named(tiny, synthetic, tmp_path):
    module = poisoned(tiny, bad_calls={1})
    with pytest.warns(UserWarning, match=r"non-finite loss \(nan\) on samples \[.+\]; step skipped"):
        trainer = fit(module, tiny, synthetic, tmp_path, steps=3)
    assert trainer.global_step == 3  # three updates, from four batches: the poisoned one did not count
    assert all(torch.isfinite(p).all() for p in module.model.projector.parameters())
    assert module.nonfinite_in_a_row == 0  # reset by the next good step


def test_non_finite_steps_in_a_row_stop_the_run(tiny, synthetic, tmp_path):
    module = poisoned(tiny, bad_calls=set(range(100)), max_nonfinite_steps=2)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match=r"2 non-finite losses in a row.*max_nonfinite"):
        fit(module, tiny, synthetic, tmp_path, steps=3)

"""The shared reducer contract (tests/reducer_contract.py) over every reducer of the ``lit_bvllm.reducers`` package: a
new reducer file is picked up, and checked at the small size its ``example`` gives."""

import inspect

import pytest
from helpers import reducer_classes
from reducer_contract import D, N, check_contract

EXPORTED = reducer_classes()


def test_every_strategy_is_found():
    assert {c.__name__ for c in EXPORTED} >= {"BVLLM", "GroupedTTM", "Identity", "LLaMAVID", "MeanPool",
                                              "TokenLearner", "Uniform", "WeightedSampler"}


@pytest.mark.parametrize("cls", EXPORTED, ids=lambda c: c.__name__)
def test_every_exported_reducer_keeps_the_contract(cls):
    assert "example" in vars(cls), f"{cls.__name__} needs a small `example(in_dim, num_patches)` for this test"
    reducer = cls.example(D, N)
    assert isinstance(reducer, cls)
    check_contract(lambda: cls.example(D, N), text_conditioned=reducer.needs_text)


@pytest.mark.parametrize("cls", EXPORTED, ids=lambda c: c.__name__)
def test_every_reducer_states_its_budget_from_its_init_args(cls, monkeypatch):
    """``budget_from(init_args)`` (what ``lit_bvllm`` derives ``--data.visual_tokens`` from before anything loads) is
    the ``budget`` the reducer has once built from the same arguments (its example's)."""
    seen = []
    init = cls.__init__

    def recording(self, *args, **kwargs):
        bound = inspect.signature(init).bind(self, *args, **kwargs)
        seen.append({k: v for k, v in bound.arguments.items() if k not in ("self", "in_dim", "dim")})
        init(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", recording)
    reducer = cls.example(D, N)
    monkeypatch.setattr(cls, "__init__", init)
    assert cls.budget_from(seen[0]) == reducer.budget


@pytest.mark.parametrize("cls", EXPORTED, ids=lambda c: c.__name__)
def test_a_reducer_called_training_free_has_nothing_to_train(cls):
    """``training_free`` lets a reducer replace a checkpoint's at evaluation: it must hold no parameter, and the
    training-free strategies of issue 26 must say so."""
    reducer = cls.example(D, N)
    if cls.training_free:
        assert not list(reducer.parameters()), cls.__name__
    assert {c.__name__ for c in EXPORTED if c.training_free} >= {"FastVID", "Identity", "MeanPool", "Uniform",
                                                                  "VisionZip"}

"""The shared reducer contract (tests/reducer_contract.py) over every reducer ``lit_bvllm.reducers`` exports: a new
reducer is picked up by being exported, and checked at the small size its ``example`` gives."""

import inspect

import pytest
from reducer_contract import D, N, check_contract

from lit_bvllm import reducers
from lit_bvllm.reducers.base import Reducer

EXPORTED = sorted((obj for name in reducers.__all__ if inspect.isclass(obj := getattr(reducers, name))
                   and issubclass(obj, Reducer) and obj is not Reducer), key=lambda c: c.__name__)


def test_every_strategy_is_exported():
    assert {c.__name__ for c in EXPORTED} >= {"BVLLM", "GroupedTTM", "Identity", "LLaMAVID", "MeanPool",
                                              "TokenLearner", "Uniform", "WeightedSampler"}


@pytest.mark.parametrize("cls", EXPORTED, ids=lambda c: c.__name__)
def test_every_exported_reducer_keeps_the_contract(cls):
    assert "example" in vars(cls), f"{cls.__name__} needs a small `example(in_dim, num_patches)` for this test"
    reducer = cls.example(D, N)
    assert isinstance(reducer, cls)
    check_contract(lambda: cls.example(D, N), text_conditioned=reducer.needs_text)

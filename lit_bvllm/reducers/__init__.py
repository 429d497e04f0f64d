"""Token-reduction strategies behind one contract (:mod:`lit_bvllm.reducers.base`); pick one with
``--model.reducer=<Name>`` and compare them at an equal budget θ."""

from lit_bvllm.reducers.base import Reducer, ReducerOutput
from lit_bvllm.reducers.bvllm import BVLLM
from lit_bvllm.reducers.fastv import FastV
from lit_bvllm.reducers.fastvid import FastVID
from lit_bvllm.reducers.identity import Identity
from lit_bvllm.reducers.llamavid import LLaMAVID
from lit_bvllm.reducers.meanpool import MeanPool
from lit_bvllm.reducers.tokenlearner import TokenLearner
from lit_bvllm.reducers.ttm import GroupedTTM
from lit_bvllm.reducers.uniform import Uniform
from lit_bvllm.reducers.visionzip import VisionZip
from lit_bvllm.reducers.weighted_sampler import WeightedSampler

__all__ = ["BVLLM", "FastV", "FastVID", "GroupedTTM", "Identity", "LLaMAVID", "MeanPool", "Reducer", "ReducerOutput",
           "TokenLearner", "Uniform", "VisionZip", "WeightedSampler"]

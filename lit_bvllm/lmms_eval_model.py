"""``lit_bvllm`` as an lmms-eval model: any suite checkpoint, with any reducer or frame selector, on lmms-eval's tasks.
``make install`` installs it (the ``[lmms]`` extra, then lmms-eval 0.7.3 without its dependencies: see the Makefile).

lmms-eval finds it through the ``lmms_eval.models`` entry point (``pyproject.toml``): ``--model lit_bvllm``. Its
``--model_args`` are ``args`` (the flags ``lit_bvllm test`` takes to build the model and read videos: configs, and
any ``--model.reducer ...`` / ``--model.frame_selector ...`` swap) and ``ckpt_path`` (a training checkpoint; or
none, for ``--model.weights`` of an export in ``args``)::

    lmms-eval --model lit_bvllm --tasks videomme --batch_size 1 --model_args "ckpt_path=RUN/checkpoints/last.ckpt,\\
        args=--config experiments/pretrain.yaml --config experiments/finetune.yaml \\
        --config experiments/eval/base.yaml --config experiments/eval/vnbench.yaml --model.reducer VisionZip"

(one line in practice: the model args are ``key=value`` pairs separated by commas.) The evaluation configs give the
frame rate, frame cap and question tokenizer, as for ``lit_bvllm test``; their benchmark is not read.

Each request is turned into the suite's own evaluation item and goes through the very code ``lit_bvllm test`` runs:
the data module's frame sampling and transform, its chat prompt with the video placeholder, and the model's option
scoring (a document's options share one prefill) or greedy generation. The task's own ``doc_to_text`` is the user
turn, shown as given; its ``doc_to_visual`` gives the video path. ``loglikelihood`` returns lmms-eval's loss (minus
the mean token log-likelihood, which its multiple-choice scoring minimises; the suite's likelihood mode maximises
the mean log-likelihood: the same choice) and whether greedy decoding writes the continuation. Rank and world size
come from the environment (``RANK``, ``WORLD_SIZE``, as torchrun and lmms-eval's accelerate launch set them); each
rank answers the requests lmms-eval hands it.
"""

from __future__ import annotations

import os
import shlex
from collections import defaultdict

import torch
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms

from datamodules.benchmarks.datamodule import BenchmarkDataModule
from datamodules.benchmarks.items import EvalItem


class AsGiven:
    """The benchmark that :class:`~datamodules.benchmarks.datamodule.BenchmarkDataset` asks for its prompt: an
    lmms-eval task's ``doc_to_text``, shown as given (no subtitles, no media roots: lmms-eval hands the paths)."""

    name = "lmms_eval"

    def frame_subtitles(self, item: EvalItem, times) -> None:
        return None

    def prompt(self, item: EvalItem, subtitles) -> str:
        return item.question

    def media_roots(self) -> list:
        return []


class LitBVLLM(lmms):
    """lmms-eval's model API over a :class:`~lit_bvllm.model.VideoLLM` (module docstring).

    Args:
        args: ``lit_bvllm test``'s flags that build the model and read the videos (one string, shell-quoted).
        ckpt_path: the training checkpoint whose weights are evaluated (None: the config's ``--model.weights``).
        batch_size: documents per forward pass.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (default: the rank's GPU when there is one, else the CPU).
    """

    def __init__(self, args: str = "", ckpt_path: str | None = None, batch_size: int | str = 1,
                 device: str | None = None, **kwargs):
        super().__init__()
        from lit_bvllm.cli.commands import lightning_cli

        argv = shlex.split(args) + ["--trainer.logger", "false"]
        cli = lightning_cli(argv, run=False)
        cli._load_trained(cli.model, ckpt_path)
        self._rank, self._world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        if device is None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = cli.model.model.to(self.device).eval()
        self.data = cli.datamodule
        if not isinstance(self.data, BenchmarkDataModule):
            raise ValueError(f"lit_bvllm's lmms-eval model reads videos as `lit_bvllm test` does: its args must "
                             f"compose an evaluation config (... --config experiments/eval/base.yaml --config "
                             f"experiments/eval/<benchmark>.yaml; its benchmark is not read), got a "
                             f"{type(self.data).__name__} from args={args!r}")
        self.batch_size = int(batch_size)
        self.args, self.ckpt_path = args, ckpt_path

    def _batches(self, items: list[EvalItem], mode: str):
        """Batches of ``items`` as the data module reads them (its frame sampling, transform, chat template, question
        tokenizer; the task's prompt as given), ``batch_size`` at a time, on the model's device."""
        data, collate = self.data.reader(items, AsGiven(), mode, allow_outside_root=True), self.data.collate(mode)
        for start in range(0, len(items), self.batch_size):
            batch = collate([data[i] for i in range(start, min(start + self.batch_size, len(items)))])
            yield {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _video(self, doc_to_visual, task: str, split: str, doc_id: int) -> str:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if not visuals or not isinstance(visuals[0], str):
            raise ValueError(f"lit_bvllm reads one video file per document; task {task!r} document {doc_id} gave "
                             f"{type(visuals[0]).__name__ if visuals else 'no visual'}")
        return visuals[0]

    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """(loss, is_greedy) of each request's continuation after its context, as the ``text`` of a
        ``GenerationResult``: the requests of one document and context (its options) are one item, scored in one
        prefill."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        continuations = []
        for i, req in enumerate(requests):
            ctx, cont, doc_to_visual, doc_id, task, split = req.args
            if callable(cont):  # output_type loglikelihood: the task's doc_to_target
                cont = cont(self.task_dict[task][split][doc_id])
            continuations.append(str(cont))
            groups[(task, split, doc_id, ctx, self._video(doc_to_visual, task, split, doc_id))].append(i)
        items = [EvalItem(id=f"{task}/{split}/{doc_id}", video=video, question=ctx,
                          options=[continuations[i] for i in members], answer=0)
                 for (task, split, doc_id, ctx, video), members in groups.items()]
        out: list[GenerationResult | None] = [None] * len(requests)
        members = list(groups.values())
        done = 0
        for batch in self._batches(items, "likelihood"):
            scores, info = self.model.option_scores(batch)
            for b in range(scores.shape[0]):
                for j, i in enumerate(members[done + b]):
                    # wrapped: lmms-eval 0.7.3's evaluator turns any other tuple into its str() (api/instance.py,
                    # unwrap_generation_output), which its multiple-choice scoring cannot unpack
                    out[i] = GenerationResult((-float(scores[b, j]), bool(info["option_greedy"][b, j])))
            done += scores.shape[0]
        return out

    @torch.no_grad()
    def _generate(self, prompts: list[tuple[str, str]], gen_kwargs: dict) -> list[str]:
        items = [EvalItem(id=str(i), video=video, question=ctx, options=[], answer="")
                 for i, (ctx, video) in enumerate(prompts)]
        texts = []
        for batch in self._batches(items, "generate"):
            texts += self.model.generate(batch, max_new_tokens=gen_kwargs.get("max_new_tokens"))
        for stop in gen_kwargs.get("until") or []:
            texts = [t.split(stop)[0] for t in texts]
        return texts

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers (the suite's ``generate``: sampling settings in ``gen_kwargs`` are not used), cut at the
        request's ``until`` strings."""
        out = [""] * len(requests)
        by_kwargs: dict[str, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            by_kwargs[repr(sorted(req.args[1].items()))].append(i)
        for members in by_kwargs.values():
            gen_kwargs = requests[members[0]].args[1]
            prompts = [(requests[i].args[0], self._video(*[requests[i].args[k] for k in (2, 4, 5, 3)]))
                       for i in members]
            for i, text in zip(members, self._generate(prompts, gen_kwargs)):
                out[i] = text
        return out

    def generate_until_multi_round(self, requests: list[Instance]) -> list:
        """Each document's rounds: the first from its context, each next one from the task's ``doc_to_text`` given
        the answers so far, until it signals the end; the rounds' answers (as the task returns them)."""
        out = []
        for req in requests:
            ctx, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = req.args
            doc = self.task_dict[task][split][doc_id]
            video, answers, info, round_idx = self._video(doc_to_visual, task, split, doc_id), [], None, 0
            while True:
                if round_idx:
                    visuals, ctx, terminal, answers, info = doc_to_text(doc, previous_output=answers,
                                                                        round_idx=round_idx, previous_round_info=info)
                    answers = list(answers)
                    if terminal:
                        break
                    video = visuals[0] if visuals else video
                answers.append(self._generate([(ctx, video)], dict(gen_kwargs))[0])
                round_idx += 1
            out.append(tuple(answers))
        return out


def manifest():
    """lmms-eval's registration (the ``lmms_eval.models`` entry point in ``pyproject.toml``): ``--model lit_bvllm``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="lit_bvllm", simple_class_path="lit_bvllm.lmms_eval_model.LitBVLLM")

"""``lit_bvllm export``: a folder that loads without Lightning.

Layout::

    DIR/config.json          paths, reducer class + init args, feature layer, placeholder token
    DIR/visual.safetensors   every reducer and projector tensor
    DIR/llm/                 the LLM (LoRA merged in) and its tokenizer          -- merge_lora=True
    DIR/adapter/             the LoRA adapter in peft format + tokenizer         -- merge_lora=False (base LLM by path)
    DIR/model.yaml           the same model as a ``lit_bvllm`` config: ``lit_bvllm test --config
                             experiments/eval/base.yaml --config experiments/eval/<benchmark>.yaml --config
                             DIR/model.yaml`` evaluates the export

:func:`load_exported` rebuilds the same :class:`~lit_bvllm.model.VideoLLM` from that folder with transformers, peft
and safetensors only.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from safetensors.torch import save_file

from lit_bvllm.model import VideoLLM, reducer_factory
from lit_bvllm.weights import VISUAL_PREFIXES, load_visual_weights


def export(model: VideoLLM, out: str | Path, merge_lora: bool = False) -> Path:
    """Write ``model`` (a trained :class:`~lit_bvllm.model.VideoLLM`, e.g. ``VideoLLMModule.model``) to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    visual = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k.startswith(VISUAL_PREFIXES)}
    save_file(visual, str(out / "visual.safetensors"))
    has_lora = hasattr(model.llm, "peft_config")
    cfg = {**model.config, "vision_tower": str(Path(model.config["vision_tower"]).resolve())}
    reducer = cfg.get("reducer")
    if isinstance(reducer, dict) and (reducer.get("init_args") or {}).get("qformer"):  # the Q-Former's config folder,
        qformer = str(Path(reducer["init_args"]["qformer"]).resolve())  # read to build it: absolute, as the tower's
        cfg["reducer"] = {**reducer, "init_args": {**reducer["init_args"], "qformer": qformer}}
    if has_lora and not merge_lora:
        model.llm.save_pretrained(out / "adapter")
        model.tokenizer.save_pretrained(out / "adapter")
        cfg.update(llm=str(Path(model.config["llm"]).resolve()), adapter="adapter")
    else:
        llm = model.llm.merge_and_unload() if has_lora else model.llm
        llm.save_pretrained(out / "llm")
        model.tokenizer.save_pretrained(out / "llm")
        cfg.update(llm="llm", adapter=None)
        if has_lora:  # merge_and_unload changed the module in place: keep the caller's model usable
            model.llm = llm
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "model.yaml").write_text(_model_yaml(out.resolve(), cfg))
    return out


def _model_yaml(out: Path, cfg: dict) -> str:
    """The export as the ``model:`` section of a ``lit_bvllm`` config (the reducer and projector come from
    ``weights``, the LoRA weights from the merged LLM or ``lora_adapter``)."""
    model = {
        "llm": str(out / cfg["llm"]) if cfg["adapter"] is None else cfg["llm"],
        "vision_tower": cfg["vision_tower"],
        "reducer": cfg["reducer"],
        "feature_layer": cfg["feature_layer"],
        "vision_chunk": cfg["vision_chunk"],
        "video_token": cfg["video_token"],
        "max_new_tokens": cfg["max_new_tokens"],
        "lora_r": 0,
        "init_from": None,
        "weights": str(out),
        "lora_adapter": None if cfg["adapter"] is None else str(out / cfg["adapter"]),
    }
    if cfg.get("frame_selector"):  # a training-free selector the model was exported with (no weights of its own)
        model["frame_selector"] = cfg["frame_selector"]
    return "# written by lit_bvllm export\n" + yaml.safe_dump({"model": model}, sort_keys=False)


def load_exported(path: str | Path) -> VideoLLM:
    """A ``lit_bvllm export`` folder as the :class:`~lit_bvllm.model.VideoLLM` it was written from (eval mode)."""
    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    adapter = None if cfg["adapter"] is None else path / cfg["adapter"]
    llm = path / cfg["llm"] if adapter is None else Path(cfg["llm"])
    model = VideoLLM(str(llm), cfg["vision_tower"], reducer_factory(cfg["reducer"]), cfg["feature_layer"],
                     cfg["vision_chunk"], cfg["video_token"], cfg["max_new_tokens"],
                     tokenizer=None if adapter is None else str(adapter),  # the tokenizer saved with the adapter
                     frame_selector=reducer_factory(cfg["frame_selector"]) if cfg.get("frame_selector") else None)
    if adapter is not None:
        model.load_lora(str(adapter))
    load_visual_weights(model, path, flag=f"the export '{path}'")
    return model.eval()

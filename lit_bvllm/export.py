"""``lit_bvllm export``: a folder that loads without Lightning.

Layout::

    DIR/config.json          paths, reducer class + init args, feature layer, placeholder token
    DIR/visual.safetensors   every reducer and projector tensor
    DIR/llm/                 the LLM (LoRA merged in) and its tokenizer          -- merge_lora=True
    DIR/adapter/             the LoRA adapter in peft format + tokenizer         -- merge_lora=False (base LLM by path)
    DIR/model.yaml           the same model as a ``lit_bvllm`` config: ``lit_bvllm test --config
                             experiments/eval/<benchmark>.yaml --config DIR/model.yaml`` evaluates the export

:func:`load_exported` rebuilds the model from that folder with transformers, peft and safetensors only.
"""

from __future__ import annotations

import functools
import importlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lit_bvllm import pipeline
from lit_bvllm.backbones import load_tokenizer


def export(model, out: str | Path, merge_lora: bool = False) -> Path:
    """Write ``model`` (a trained ``VideoLLM``) to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    h = model.hparams
    visual = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k.startswith(("reducer.", "projector."))}
    save_file(visual, str(out / "visual.safetensors"))
    has_lora = hasattr(model.llm, "peft_config")
    cfg = {
        "vision_tower": str(Path(h.vision_tower).resolve()),
        "feature_layer": h.feature_layer,
        "vision_chunk": h.vision_chunk,
        "reducer": model.hparams.reducer,
        "video_token": h.video_token,
        "max_new_tokens": h.max_new_tokens,
    }
    if has_lora and not merge_lora:
        model.llm.save_pretrained(out / "adapter")
        model.tokenizer.save_pretrained(out / "adapter")
        cfg.update(llm=str(Path(h.llm).resolve()), adapter="adapter")
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
    ``init_from``, the LoRA weights from the merged LLM or ``lora_adapter``)."""
    import yaml

    model = {
        "llm": str(out / cfg["llm"]) if cfg["adapter"] is None else cfg["llm"],
        "vision_tower": cfg["vision_tower"],
        "reducer": cfg["reducer"],
        "feature_layer": cfg["feature_layer"],
        "vision_chunk": cfg["vision_chunk"],
        "video_token": cfg["video_token"],
        "max_new_tokens": cfg["max_new_tokens"],
        "lora_r": 0,
        "init_from": str(out),
        "lora_adapter": None if cfg["adapter"] is None else str(out / cfg["adapter"]),
    }
    return "# written by lit_bvllm export\n" + yaml.safe_dump({"model": model}, sort_keys=False)


class ExportedVideoLLM(nn.Module):
    """Vision tower -> reducer -> projector -> LLM, rebuilt from an export folder (no Lightning)."""

    def __init__(self, path: str | Path):
        super().__init__()
        path = Path(path)
        cfg = json.loads((path / "config.json").read_text())
        llm_dir = path / cfg["llm"] if cfg["adapter"] is None else Path(cfg["llm"])
        module, name = cfg["reducer"]["class_path"].rsplit(".", 1)
        reducer = functools.partial(getattr(importlib.import_module(module), name), **cfg["reducer"]["init_args"])
        pipeline.build(self, str(llm_dir), cfg["vision_tower"], reducer, cfg["feature_layer"], cfg["vision_chunk"],
                       cfg["video_token"])
        if cfg["adapter"] is not None:
            from peft import PeftModel

            self.tokenizer = load_tokenizer(path / cfg["adapter"], cfg["video_token"])  # the one saved with the adapter
            self.llm = PeftModel.from_pretrained(self.llm, path / cfg["adapter"])
        missing, unexpected = self.load_state_dict(load_file(str(path / "visual.safetensors")), strict=False)
        bad = [k for k in missing if k.startswith(("reducer.", "projector."))]
        if bad or unexpected:
            raise ValueError(f"export '{path}' does not match its config: missing {bad[:5]}, unexpected {unexpected[:5]}")
        self.max_new_tokens = cfg["max_new_tokens"]
        self.eval()

    @torch.no_grad()
    def forward(self, batch: dict) -> torch.Tensor:
        """LLM logits over the spliced sequence ``(B, L', V)``."""
        embeds, mask, _, _ = pipeline.embed(self, batch, with_labels=False)
        return self.llm(inputs_embeds=embeds, attention_mask=mask).logits

    def generate(self, batch: dict, max_new_tokens: int | None = None) -> list[str]:
        return pipeline.generate(self, batch, max_new_tokens or self.max_new_tokens)


def load_exported(path: str | Path) -> ExportedVideoLLM:
    """Load a ``lit_bvllm export`` folder as a plain ``nn.Module``."""
    return ExportedVideoLLM(path)

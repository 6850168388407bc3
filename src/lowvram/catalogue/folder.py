"""The spec of a user's diffusers folder: the catalogue architecture it was identified as, with the
folder's own config.json for each component whose config differs from the catalogue's.

Distilled and scaled variants (SSD-1B and Segmind Vega are narrower SDXL UNets, Flux "lite" has fewer
blocks) are recognised as their catalogue architecture but are other sizes: planning them with the
catalogue's configs plans another model. The spec keeps the catalogue name, so defaults, pipelines and
names work as before; a folder whose configs equal the catalogue's gets the catalogue spec itself, so
its plans (and the shipped answers they use) stay exactly those of the catalogue model.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import replace
from typing import Any

from ..cache import cached_json
from .build import _BOOKKEEPING_KEYS, diffusers_class, load_config
from .spec import ComponentSpec, ModelSpec

CONFIG_FILE = "config.json"  # the diffusers / transformers name of a component folder's config
INDEX_FILE = "model_index.json"  # what makes a folder a diffusers pipeline folder
# Fields a transformers encoder class rewrites on its own config (T5EncoderModel.__init__ sets both False, so
# its saved config.json says so while the published T5 config says True): neither changes an encoder's
# weights or its forward, so they are no difference between two configs.
_ENCODER_RUNTIME_KEYS = ("use_cache", "is_encoder_decoder")


def folder_spec(model: ModelSpec, rep) -> ModelSpec:
    """`model` (the catalogue spec `rep`, an Inspection, was identified as) with each component of a
    diffusers folder planned from that folder's config.json where it differs from the catalogue's.
    Single files, GGUF files and component files have no configs of their own: `model` unchanged."""
    folder = rep.path
    if rep.format != "diffusers" or not os.path.isfile(os.path.join(folder, INDEX_FILE)):
        return model  # also DeepFloyd IF's cascade root: its stage folders are not component folders
    changed = {}
    for comp in model.components:
        path = os.path.abspath(os.path.join(folder, comp.name, CONFIG_FILE))
        if os.path.isfile(path) and not same_config(comp, load_config(path)):
            changed[comp.name] = replace(comp, config=path)
    if not changed:
        return model
    return replace(model, components=tuple(changed.get(c.name, c) for c in model.components))


def same_config(comp: ComponentSpec, cfg: dict[str, Any]) -> bool:
    """Whether `cfg` builds the same module as the catalogue's config of `comp`. Saved configs carry
    every constructor default and version bookkeeping the shipped ones may omit, so a plain comparison
    is tried first and, when it differs, both are compared with the class's defaults filled in."""
    shipped = load_config(comp.config)
    if _plain(shipped) == _plain(cfg):
        return True
    # Filling the defaults in imports torch and the class's library (~8 s), which a warm `lowvram plan`
    # never does otherwise: the answer is cached like a simulation's, keyed on both configs (and, by the
    # cache, on the library versions whose defaults it used).
    key = {"class": comp.class_name, "library": comp.library, "shipped": _plain(shipped), "folder": _plain(cfg)}
    return cached_json("same_config", key, lambda: _complete(comp, shipped) == _complete(comp, cfg))


def _plain(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k not in _BOOKKEEPING_KEYS}


def _complete(comp: ComponentSpec, cfg: dict[str, Any]) -> Any:
    """The config as the class sees it: diffusers' constructor arguments with their defaults, or the
    transformers config object's full dict (which fills its own defaults and nested sub-configs)."""
    cfg = _plain(cfg)
    if comp.library == "diffusers":
        params = inspect.signature(diffusers_class(comp.class_name).__init__).parameters
        return {name: _json_like(cfg.get(name, p.default)) for name, p in params.items()
                if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    import transformers

    model_type = cfg.pop("model_type", None)
    if model_type is None:
        return cfg
    full = _plain(transformers.AutoConfig.for_model(model_type, **cfg).to_dict())
    return {k: v for k, v in full.items() if k not in _ENCODER_RUNTIME_KEYS}


def _json_like(value: Any) -> Any:
    """Tuples as lists: a constructor default `(320, 640)` and a saved `[320, 640]` are the same config."""
    if isinstance(value, (tuple, list)):
        return [_json_like(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_like(v) for k, v in value.items()}
    return value

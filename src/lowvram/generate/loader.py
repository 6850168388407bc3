"""Build a diffusers pipeline from a local diffusers folder, weights straight into the planned precision.

Model components are built on the meta device from the folder's own config.json and filled tensor by
tensor (runtime/loading.py): no full-precision copy in RAM first. Tokenizers, schedulers and feature
extractors load with their own `from_pretrained` from the local sub-folder — never from a hub.
"""

from __future__ import annotations

import os
import time

import torch

from ..checkpoints.diffusers_index import read_index
from ..errors import UserError
from ..jsonfile import read_json
from ..contract import ComponentPlan, Plan
from ..runtime.loading import iter_safetensors, load_into
from ..runtime.precision import COMPUTE_DTYPES, PrecisionConfig

NON_MODULE_KINDS = ("Tokenizer", "Scheduler", "FeatureExtractor", "ImageProcessor", "Processor")
TOKENIZER_FILES = {"CLIPTokenizer": ("vocab.json", "merges.txt"), "T5TokenizerFast": ("tokenizer.json or spiece.model",),
                   "T5Tokenizer": ("spiece.model",)}


def _weights(sub: str) -> list[str]:
    from ..checkpoints.inspect import safetensors_files

    files = safetensors_files(sub)
    if not files:
        raise UserError(f"{sub} has no .safetensors weights: convert the component to safetensors or download it again.")
    return files


def build_module(sub: str, library: str, class_name: str) -> torch.nn.Module:
    """The component's class from its own config.json: parameters on the meta device (filled by the
    loader), buffers and other tensors computed in __init__ (rotary tables...) real, on the CPU."""
    from accelerate import init_empty_weights

    # checked here so a damaged config is one sentence, not a traceback from inside from_pretrained
    read_json(os.path.join(sub, "config.json"), f"a {class_name} config.json", fix="download the component again")
    with init_empty_weights(include_buffers=False):
        if library == "transformers":
            import transformers

            cls = getattr(transformers, class_name)
            config = transformers.AutoConfig.from_pretrained(sub, local_files_only=True)
            return cls._from_config(config, attn_implementation="sdpa").eval()
        import diffusers

        cls = getattr(diffusers, class_name)
        return cls.from_config(cls.load_config(sub, local_files_only=True)).eval()


def _renamings(module: torch.nn.Module) -> list[tuple[str, str]]:
    """transformers' own checkpoint key renamings for this model (v5 saves e.g. Qwen2.5-VL as `visual.*` /
    `model.layers.*` and loads them as `model.visual.*` / `model.language_model.layers.*`)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
    except ImportError:
        return []
    out = []
    try:
        for m in get_model_conversion_mapping(module):
            if type(m).__name__ in ("WeightRenaming", "PrefixChange"):
                out += list(zip(m.source_patterns, m.target_patterns))
    except Exception:  # not a transformers model, or an older transformers: names are used as stored
        return []
    return out


def _key_map(expected: set[str], module: torch.nn.Module | None = None):
    """Stored name -> module name: as is, the two CLIP spellings (transformers < 5 saves `text_model.*`,
    5 drops it), or transformers' own renamings for the model."""
    import re

    renames = _renamings(module) if module is not None and hasattr(module, "config") and \
        not hasattr(module.config, "_class_name") else []

    def fn(name: str) -> str | None:
        if name in expected:
            return name
        if name.startswith("text_model.") and name[len("text_model."):] in expected:
            return name[len("text_model."):]
        if "text_model." + name in expected:
            return "text_model." + name
        for src, dst in renames:  # transformers applies the first rule that matches
            renamed, n = re.subn(src, dst, name)
            if n:
                return renamed if renamed in expected else None
        return None
    return fn


def component_dtype(cp: ComponentPlan | None, default: torch.dtype) -> torch.dtype:
    """The dtype a component is loaded in: the one its plan computes it in (an fp16-overflowing VAE: fp32),
    else the pipeline's."""
    return COMPUTE_DTYPES[cp.compute_dtype] if cp is not None else default


def load_module(sub: str, library: str, class_name: str, compute_dtype: torch.dtype,
                cp: ComponentPlan | None) -> torch.nn.Module:
    """A component folder's weights straight into the precision and source (RAM or a read-only file
    mapping) its plan names; without a plan, in the compute dtype from RAM."""
    module = build_module(sub, library, class_name)
    compute_dtype = component_dtype(cp, compute_dtype)
    precision = cp.precision if cp is not None else None
    pc = PrecisionConfig(precision, compute_dtype) if precision in ("fp8", "int8") else None
    expected = set(module.state_dict().keys())
    load_into(module, iter_safetensors(_weights(sub)), compute_dtype, pc, key_map=_key_map(expected, module),
              disk_backed=cp is not None and cp.source == "disk")
    return finish_module(module, sub)


def finish_module(module: torch.nn.Module, source: str) -> torch.nn.Module:
    """After loading: re-tie tied weights (stored once) and refuse gaps."""
    if hasattr(module, "tie_weights"):  # tied weights are stored once (T5's shared embedding)
        module.tie_weights()
    missing = [k for k, t in module.state_dict(keep_vars=True).items() if t.is_meta]
    if missing:
        raise UserError(f"{source} is missing {len(missing)} weights (first: {missing[0]}); the download is incomplete "
                        "or it is another variant of the model.")
    return module.requires_grad_(False)


def _library_class(library: str, class_name: str):
    """The class `class_name` of diffusers or transformers (as model_index.json names them), else None."""
    import diffusers
    import transformers

    lib = transformers if library == "transformers" else diffusers
    cls = getattr(lib, class_name, None) if class_name.isidentifier() else None
    return cls if isinstance(cls, type) else None


def assemble_pipeline(folder: str, load_model, omit: tuple[str, ...] = (), timings: dict[str, float] | None = None):
    """The pipeline its model_index.json describes: tokenizers, schedulers and processors from `folder`,
    model components from `load_model(name, sub, library, class_name)`; the parts named in `omit` are
    None (not read at all). `timings` gets each model component's load time in seconds."""
    import diffusers
    import transformers

    index = read_index(folder)
    parts: dict[str, object] = {}
    modules: dict[str, torch.nn.Module] = {}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        library, class_name = value
        if library is None or class_name is None or name in omit:
            parts[name] = None
            continue
        if not (isinstance(library, str) and isinstance(class_name, str)
                and _library_class(library, class_name) is not None):
            raise UserError(f"{folder}/model_index.json names {name} as {str(value)[:80]}, which is not a class of "
                            "diffusers or transformers: point at a diffusers folder, or download it again.")
        sub = os.path.join(folder, name)
        if any(k in class_name for k in NON_MODULE_KINDS):
            if not os.path.isdir(sub):
                files = " and ".join(TOKENIZER_FILES.get(class_name, ("its files",)))
                raise UserError(f"{folder} has no {name}/ folder ({class_name}): put {files} there, "
                                "or run `lowvram pull` for this model.")
            lib = transformers if library == "transformers" else diffusers
            try:
                parts[name] = getattr(lib, class_name).from_pretrained(sub, local_files_only=True)
            except (OSError, ValueError) as e:
                raise UserError(f"{sub} cannot be loaded as a {class_name} ({str(e).splitlines()[0]}); "
                                "put the missing files there, or run `lowvram pull` for this model.") from None
            continue
        t0 = time.perf_counter()
        modules[name] = parts[name] = load_model(name, sub, library, class_name)
        if timings is not None:
            timings[name] = time.perf_counter() - t0
    cls = _library_class("diffusers", index.get("_class_name") or "")
    if cls is None:
        raise UserError(f"{folder}/model_index.json names pipeline {str(index.get('_class_name'))[:80]!r}, which diffusers "
                        "does not have: point at a diffusers folder, or update diffusers.")
    if "requires_safety_checker" in cls.__init__.__code__.co_varnames:
        parts.setdefault("requires_safety_checker", False)
    return cls(**parts), modules


def load_pipeline(folder: str, plan: Plan, compute_dtype: torch.dtype, names: dict[str, str] | None = None,
                  omit: tuple[str, ...] = (), timings: dict[str, float] | None = None):
    """(pipeline, {component name: module}) from a diffusers folder, each component per the plan.

    `names` maps pipeline attributes to the plan's component names where they differ (a cascade stage's
    `unet` is the plan's `unet_2`); the returned modules are keyed by the plan's names, and so are the
    load times put in `timings`."""
    by_name = {c.name: c for c in plan.components}
    names = names or {}

    def load_model(name, sub, library, class_name):
        if not os.path.isdir(sub):
            raise UserError(f"{folder} has no {name}/ folder, which its model_index.json lists: the download is incomplete.")
        cp = by_name.get(names.get(name, name))
        return load_module(sub, library, class_name, compute_dtype, cp)

    own: dict[str, float] = {}
    pipe, modules = assemble_pipeline(folder, load_model, omit, own)
    if timings is not None:
        timings.update({names.get(k, k): s for k, s in own.items()})
    return pipe, {names.get(k, k): m for k, m in modules.items()}


def load_controlnet(folder: str, compute_dtype: torch.dtype, plan: Plan | None = None) -> torch.nn.Module:
    """A diffusers ControlNet folder (ControlNetModel, FluxControlNetModel), stored in the precision and
    from the source (RAM or a disk mapping) the plan's "controlnet" component names."""
    class_name = read_json(os.path.join(folder, "config.json"), "a diffusers ControlNet config",
                           fix="point at a diffusers ControlNet folder").get("_class_name")
    if not isinstance(class_name, str) or "ControlNet" not in class_name:
        from ..catalogue.controlnet import shown_class

        raise UserError(f"{folder} holds a {shown_class(class_name)}, not a ControlNet.")
    cp = next((c for c in plan.components if c.name == "controlnet"), None) if plan is not None else None
    return load_module(folder, "diffusers", class_name, compute_dtype, cp)


# Parts of an IF stage folder that are never read: the safety checker, its feature extractor and the
# watermarker (lowvram writes images as generated, as for every other family; diffusers allows None).
SAFETY_PARTS = ("safety_checker", "feature_extractor", "watermarker")


def load_cascade(cascade, plan: Plan, compute_dtype: torch.dtype, timings: dict[str, float] | None = None):
    """([stage I, II, III pipelines], {plan component name: module}) from DeepFloyd IF's stage folders
    (checkpoints.cascade). Each stage loads only the components the plan names for it: stage II gets no
    text encoder (stage I's T5 embeddings are passed to it), so the T5 is loaded once."""
    from ..catalogue.deepfloyd import STAGES

    pipes, modules = [], {}
    for stage in STAGES:
        own_text = "text_encoder" in stage.components
        omit = SAFETY_PARTS + (() if own_text else ("text_encoder", "tokenizer"))
        pipe, mods = load_pipeline(cascade.folders[stage.name], plan, compute_dtype, stage.components, omit, timings)
        pipes.append(pipe)
        modules.update(mods)
    return pipes, modules

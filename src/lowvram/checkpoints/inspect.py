"""`lowvram inspect`: what a checkpoint file or folder is, from headers only.

Supported: diffusers folders (model_index.json), single-file checkpoints in original layout
(A1111 / Civitai / ComfyUI), Black Forest Labs Flux files, ComfyUI-style separate component files
(alone, or a folder of them assembled into one model), and GGUF files (city96 and stable-diffusion.cpp).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field

from ..errors import CheckpointError, UserError
from ..regular_file import open_regular, regular_file_size
from .detect import KIND_TITLES, assign_components, identify_denoiser, models_using
from .diffusers_index import read_index
from .gguf_header import read_gguf_header
from .parts import DENOISER_KINDS, Part, classify, split_parts
from .safetensors_header import read_safetensors_header
from .tensors import TensorInfo

WEIGHT_EXTS = (".safetensors", ".sft", ".gguf", ".ckpt", ".pt", ".pth", ".bin")


@dataclass
class ComponentReport:
    name: str  # pipeline attribute ("transformer", "text_encoder_2") or the part kind for a lone file
    role: str  # denoiser / text_encoder / vae
    kind: str  # part kind: "flux", "t5", "vae16", ...
    layout: str
    params: int
    bytes: int
    dtype: str  # dominant storage type by bytes: "BF16", "F8_E4M3", "Q4_K", ...
    dtypes: dict[str, int]  # tensor count per storage type
    source: str


@dataclass
class Inspection:
    """The documented `lowvram inspect --json` object."""

    path: str
    format: str  # "diffusers", "single-file", "component-files", "gguf"
    architecture: str | None  # catalogue name, or None for a lone component file
    family: str | None
    variant: str
    components: list[ComponentReport]
    missing: list[str]  # catalogue components not found (a Flux file alone misses its text encoders and VAE)
    used_by: list[str] = field(default_factory=list)  # for a lone component: models it serves
    unrecognised_tensors: int = 0
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # file name -> full path of every file read

    def to_json(self) -> dict:
        return asdict(self)

    def file_weights(self) -> dict[str, tuple[str, float]]:
        """{component: (GGUF type, stored bytes per bf16 byte)} for components stored GGUF-quantised:
        the planner uses those bytes as they are (it never re-quantises GGUF)."""
        return {c.name: (c.dtype, c.bytes / max(1, 2 * c.params)) for c in self.components
                if self.format in ("gguf", "component-files") and c.dtype.startswith(("Q", "IQ", "TQ"))}


def inspect_path(path: str, pipeline_hint: str | None = None) -> Inspection:
    """`pipeline_hint`: the diffusers pipeline class of a config folder given with the checkpoint; it
    names the architecture when the weights alone do not (fine-tunes with unusual widths)."""
    if not os.path.exists(path):
        raise UserError(f"{path} does not exist: give the path of a checkpoint file or a model folder.")
    if os.path.isdir(path):
        from .cascade import find_cascade

        cascade = find_cascade(path)
        if cascade is not None:
            return _inspect_cascade(path, cascade)
        if os.path.isfile(os.path.join(path, "model_index.json")):
            return _inspect_diffusers(path)
        return _inspect_component_folder(path, pipeline_hint)
    return _inspect_files([path], path, pipeline_hint)


def read_tensors(path: str) -> tuple[list[TensorInfo], dict]:
    """Header-level tensor table of one weights file of any supported format."""
    low = path.lower()
    if low.endswith(".gguf"):
        return read_gguf_header(path)
    if low.endswith((".safetensors", ".sft")):
        return read_safetensors_header(path)
    if low.endswith((".ckpt", ".pt", ".pth", ".bin")):
        return _read_pickle_meta(path), {}
    # Unknown extension: sniff the first bytes. A safetensors file starts with its header's length
    # (8 bytes, little-endian, within the file) and then the header's opening brace.
    with open_regular(path, "checkpoint file") as f:
        head = f.read(9)
    if head[:4] == b"GGUF":
        return read_gguf_header(path)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= os.path.getsize(path) - 8:
        return read_safetensors_header(path)
    raise CheckpointError(f"{os.path.basename(path)} is not a model file lowvram reads: give a .safetensors, .gguf or "
                          ".ckpt/.pt checkpoint, or a diffusers folder.")


# torch.save writes every zip member uncompressed (ZIP_STORED), so no member of a real checkpoint
# declares more bytes than the archive holds; a larger declared size is a compressed (zip-bomb) member.
MAX_ZIP_EXPANSION = 1


def _check_zip_members(path: str, size: int) -> None:
    """Refuse a zip checkpoint whose members declare more bytes than the file could store, before torch
    inflates any of them into memory."""
    import zipfile

    name = os.path.basename(path)
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{name} is a damaged PyTorch zip checkpoint ({str(e)[:80]}); download it again.") from None
    declared = sum(i.file_size for i in infos)
    if declared > size * MAX_ZIP_EXPANSION:
        raise CheckpointError(f"{name} declares {declared} bytes of content in a {size}-byte file (compressed members, "
                              "which torch.save never writes): it is damaged or crafted; convert the original to .safetensors.")


def load_pickle_state_dict(path: str, map_location: str) -> dict:
    """A legacy .ckpt/.pt state dict through torch's weights-only unpickler: a file that needs to run
    code to load (anything but tensors and plain containers) is refused. `map_location="meta"` reads
    no tensor data (inspection); "cpu" maps it (loading). Memory-mapping applies only to the zip format
    (torch >= 1.6); the older non-zip pickle format is read through the same weights-only unpickler."""
    import zipfile

    size = regular_file_size(path, "PyTorch checkpoint")
    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        _check_zip_members(path, size)
    import torch

    try:
        sd = torch.load(path, map_location=map_location, weights_only=True, mmap=is_zip)
    except Exception as e:  # UnpicklingError and friends: the file wants more than tensors
        raise CheckpointError(f"{os.path.basename(path)} cannot be read as a safe PyTorch checkpoint ({type(e).__name__}); "
                              "convert it to .safetensors or use a trusted source.") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{os.path.basename(path)} holds no state dict of tensors.")
    return {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _read_pickle_meta(path: str) -> list[TensorInfo]:
    """Legacy .ckpt/.pt: loaded on the meta device, so no tensor data is read."""
    return [TensorInfo(k, tuple(v.shape), str(v.dtype).replace("torch.", "").upper(), v.numel() * v.element_size())
            for k, v in load_pickle_state_dict(path, "meta").items()]


def _report(name: str, role: str, part: Part) -> ComponentReport:
    by_bytes: Counter = Counter()
    counts: Counter = Counter()
    for t in part.tensors:
        by_bytes[t.dtype] += t.nbytes
        counts[t.dtype] += 1
    dominant = by_bytes.most_common(1)[0][0] if by_bytes else "?"
    return ComponentReport(name, role, part.kind, part.layout, part.params, part.nbytes, dominant, dict(counts), part.source)


def _role(kind: str) -> str:
    if kind.startswith("vae"):
        return "vae"
    return "denoiser" if kind in DENOISER_KINDS else "text_encoder"


def _assemble(path: str, fmt: str, parts: list[Part], unknown: int, name_hint: str = "",
              pipeline_hint: str | None = None) -> Inspection:
    """Turn recognised parts into an Inspection: one denoiser decides the architecture."""
    denoisers = [p for p in parts if p.is_denoiser]
    if not parts:
        raise CheckpointError(f"{path} holds no model component lowvram recognises ({unknown} tensors of unknown layout); "
                              "check it is an image-model checkpoint.")
    notes = []
    if not denoisers:
        if len(parts) == 1:
            p = parts[0]
            variant = KIND_TITLES.get(p.kind, p.kind)
            if p.kind == "vae16":
                hint = name_hint.lower()
                variant += " — FLUX by its name" if ("flux" in hint or os.path.basename(hint) in ("ae.safetensors", "ae.sft")) else \
                    " — SD3 by its name" if "sd3" in hint else ""
            return Inspection(path, fmt, None, None, variant, [_report(p.kind, _role(p.kind), p)], [],
                              used_by=models_using(p.kind), unrecognised_tensors=unknown)
        reps = [_report(p.kind, _role(p.kind), p) for p in parts]
        return Inspection(path, fmt, None, None, "components without a diffusion model", reps, ["denoiser"],
                          unrecognised_tensors=unknown)
    ids = [_identify(p, pipeline_hint, path) for p in denoisers]
    if len({(m.name, n) for m, _, n in ids}) > 1 and fmt != "diffusers":
        names = ", ".join(sorted({p.source for p in denoisers}))
        raise UserError(f"{path} holds several diffusion models ({names}): inspect one file, or put one model's files in a folder.")
    model, variant, _ = ids[0]
    components = []
    seen = set()
    for p, (_, _, n) in zip(denoisers, ids):
        if n in seen:
            notes.append(f"extra copy of {n} ignored: {p.source}")
            continue
        seen.add(n)
        components.append(_report(n, "denoiser", p))
    assigned, unused = assign_components(model, [p for p in parts if not p.is_denoiser])
    for name, p in assigned.items():
        components.append(_report(name, model.component(name).role, p))
    for p in unused:
        notes.append(f"{KIND_TITLES.get(p.kind, p.kind)} in {p.source} is not a component of {model.name}")
    order = {c.name: i for i, c in enumerate(model.components)}
    components.sort(key=lambda c: order.get(c.name, 99))
    missing = [c.name for c in model.components if c.name not in {r.name for r in components}]
    return Inspection(path, fmt, model.name, model.family, variant, components, missing,
                      unrecognised_tensors=unknown, notes=notes)


def _identify(p: Part, pipeline_hint: str | None = None, path: str = ""):
    try:
        return identify_denoiser(p)
    except ValueError as e:
        if pipeline_hint in PIPELINE_MODELS:
            model, variant = _by_pipeline_class(path, {"_class_name": pipeline_hint}, p)
            return model, variant, model.by_role("denoiser")[0].name
        raise UserError(f"{p.source} is a diffusion model of an architecture lowvram does not know ({e}); "
                        "see `lowvram models` for the supported ones.") from None


def _inspect_files(files: list[str], path: str, pipeline_hint: str | None = None, extra: int = 0) -> Inspection:
    """`extra`: how many of the last files are optional candidates (a models/ tree) that may not fit."""
    parts: list[Part] = []
    unknown = 0
    gguf = False
    for n, f in enumerate(files):
        tensors, meta = read_tensors(f)
        gguf |= f.lower().endswith(".gguf")
        p, u = split_parts(tensors, os.path.basename(f))
        if not p and tensors and not os.path.isdir(path) and n < len(files) - extra:
            raise CheckpointError(f"{os.path.basename(f)} holds no model component lowvram recognises "
                                  f"({len(tensors)} tensors of unknown layout); check it is an image-model checkpoint.")
        parts.extend(p)
        unknown += len(u)
    if os.path.isdir(path):
        fmt = "component-files"
    else:
        fmt = "gguf" if gguf else "single-file"
    rep = _assemble(path, fmt, parts, unknown, name_hint=path, pipeline_hint=pipeline_hint)
    rep.files = {os.path.basename(f): f for f in files}
    if extra:  # candidates from a models/ tree that belong to other models are not worth a note
        rep.notes = [n for n in rep.notes if "is not a component of" not in n]
    return rep


# Where ComfyUI (models/...) and A1111 (models/...) keep each kind of file.
MODEL_DIRS = ("diffusion_models", "unet", "checkpoints", "Stable-diffusion")
COMPONENT_DIRS = ("text_encoders", "clip", "vae", "VAE")


def find_in_models_dir(name: str, models_dir: str) -> str:
    """A diffusion model or checkpoint file by name inside a ComfyUI / A1111 models/ tree."""
    for sub in MODEL_DIRS:
        cand = os.path.join(models_dir, sub, name)
        if os.path.isfile(cand):
            return cand
    raise UserError(f"{name} is not in {models_dir}/{{{','.join(MODEL_DIRS)}}}: give its path, or the right --models-dir.")


def inspect_with_models_dir(model_file: str, models_dir: str, pipeline_hint: str | None = None) -> Inspection:
    """The model file, completed with the text encoders and VAE the models/ tree holds for it."""
    if not os.path.isdir(models_dir):
        raise UserError(f"--models-dir {models_dir} is not a folder: give a ComfyUI or A1111 models/ folder.")
    candidates = []
    for sub in COMPONENT_DIRS:
        folder = os.path.join(models_dir, sub)
        if os.path.isdir(folder):
            candidates += _weight_files(folder)
    return _inspect_files([model_file] + candidates, model_file, pipeline_hint, extra=len(candidates))


def _weight_files(folder: str) -> list[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(WEIGHT_EXTS) and os.path.isfile(os.path.join(folder, f)))


def _inspect_component_folder(path: str, pipeline_hint: str | None = None) -> Inspection:
    files = _weight_files(path)
    # A ComfyUI models/ tree keeps components in sub-folders: diffusion_models/, text_encoders/, vae/, ...
    for sub in sorted(os.listdir(path)):
        if os.path.isdir(os.path.join(path, sub)):
            files += _weight_files(os.path.join(path, sub))
    if not files:
        raise UserError(f"{path} holds no model: no model_index.json and no weight files ({', '.join(WEIGHT_EXTS)}).")
    return _inspect_files(files, path, pipeline_hint)


def _inspect_diffusers(path: str) -> Inspection:
    index = read_index(path)
    parts_by_name: dict[str, Part] = {}
    unknown = 0
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] is None:
            continue
        sub = os.path.join(path, name)
        if not os.path.isdir(sub):
            continue
        files = _pick_weight_files(sub)
        tensors: list[TensorInfo] = []
        for f in files:
            t, _ = read_tensors(f)
            tensors.extend(t)
        if not tensors:
            continue
        part = classify(tensors, name)
        if part is None:
            unknown += len(tensors)
            continue
        parts_by_name[name] = part
    denoisers = [p for p in parts_by_name.values() if p.is_denoiser]
    if not denoisers:
        raise CheckpointError(f"{path} is a diffusers folder without a readable diffusion model (unet/ or transformer/ weights are missing).")
    # a fine-tune or scaled variant with unusual widths: the folder's pipeline class decides
    model, variant, _ = _identify(denoisers[0], index.get("_class_name"), path)
    comps = []
    for name, p in parts_by_name.items():
        role = _role(p.kind)
        comps.append(_report(name, role, p))
    order = {c.name: i for i, c in enumerate(model.components)}
    comps.sort(key=lambda c: order.get(c.name, 99))
    present = {c.name for c in comps}
    missing = [c.name for c in model.components if c.name not in present]
    return Inspection(path, "diffusers", model.name, model.family, variant, comps, missing, unrecognised_tensors=unknown)


def _inspect_cascade(path: str, cascade) -> Inspection:
    """DeepFloyd IF's stage folders inspected one by one, as one model: each stage's components under
    their catalogue names (stage II's `unet` is `unet_2`...); what a stage folder holds beyond them
    (stage II's copy of the T5) is noted, not counted."""
    from dataclasses import replace

    from ..catalogue import MODELS
    from ..catalogue.deepfloyd import STAGES

    model = MODELS["deepfloyd-if"]
    comps, notes, unknown = [], [], 0
    for stage in STAGES:
        folder = cascade.folders.get(stage.name)
        if folder is None:
            notes.append(f"stage {stage.name} ({stage.pipeline}, {stage.repo}) not found")
            continue
        rep = _inspect_diffusers(folder)
        if rep.architecture != model.name:
            raise CheckpointError(f"{folder} is a {stage.pipeline} folder but holds {rep.architecture} weights, "
                                  f"not DeepFloyd IF stage {stage.name}.")
        notes.append(f"stage {stage.name}: {folder}")
        unknown += rep.unrecognised_tensors
        for c in rep.components:
            if c.name in stage.components:
                comps.append(replace(c, name=stage.components[c.name]))
            else:
                notes.append(f"stage {stage.name}'s {c.name} is not used")
    order = {c.name: i for i, c in enumerate(model.components)}
    comps.sort(key=lambda c: order.get(c.name, 99))
    present = {c.name for c in comps}
    missing = [c.name for c in model.components if c.name not in present]
    found = [s.name for s in STAGES if s.name in cascade.folders]
    variant = "stages " + ", ".join(found) if len(found) < len(STAGES) else "I-XL + II-L + x4 upscaler cascade"
    return Inspection(path, "diffusers", model.name, model.family, variant, comps, missing,
                      unrecognised_tensors=unknown, notes=notes)


# diffusers pipeline class -> catalogue model, for folders whose weights alone do not say (e.g. widths)
PIPELINE_MODELS = {
    "StableDiffusionPipeline": "sd15", "StableDiffusionImg2ImgPipeline": "sd15", "StableDiffusionInpaintPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl", "StableDiffusionXLImg2ImgPipeline": "sdxl-refiner",
    "StableDiffusion3Pipeline": "sd35-large", "FluxPipeline": "flux-dev", "PixArtAlphaPipeline": "pixart-alpha",
    "PixArtSigmaPipeline": "pixart-sigma", "HiDreamImagePipeline": "hidream-i1", "IFPipeline": "deepfloyd-if",
    "ChromaPipeline": "chroma", "QwenImagePipeline": "qwen-image",
}


def _by_pipeline_class(path: str, index: dict, denoiser: Part):
    from ..catalogue import MODELS

    cls = index.get("_class_name", "")
    name = PIPELINE_MODELS.get(cls) if isinstance(cls, str) else None  # a damaged index may hold a list here
    if name is None:
        from ..catalogue.controlnet import shown_class

        raise UserError(f"{path} holds a {shown_class(cls)} that lowvram does not know; see `lowvram models`.")
    if name == "flux-dev" and not denoiser.facts.get("guidance"):
        name = "flux-schnell"
    if name == "sd15" and (denoiser.facts.get("context_dim") == 1024 or denoiser.facts.get("linear_proj")):
        name = "sd21"
    if name == "sd35-large":  # MMDiT-X has dual attention, 3.5 Large QK norm, SD3 Medium neither
        name = "sd35-medium" if denoiser.facts.get("dual") else "sd35-large" if denoiser.facts.get("qk_norm") else "sd3-medium"
    return MODELS[name], "variant (by pipeline class)"


def safetensors_files(folder: str) -> list[str]:
    """A component folder's safetensors weights (all shards, or one precision variant), [] if none."""
    return [f for f in _pick_weight_files(folder) if f.endswith(".safetensors")] if os.path.isdir(folder) else []


def _pick_weight_files(folder: str) -> list[str]:
    """A component folder's weights: the plain files (all shards), else one precision variant (fp16...).

    diffusers names them `diffusion_pytorch_model[.VARIANT][-0000i-of-0000n].safetensors`.
    """
    by_variant: dict[tuple[str, str], list[str]] = {}
    for f in sorted(os.listdir(folder)):
        for ext in (".safetensors", ".bin"):
            if f.endswith(ext):
                stem = re.sub(r"-\d+-of-\d+$", "", f[: -len(ext)])
                variant = stem.split(".", 1)[1] if "." in stem else ""
                by_variant.setdefault((ext, variant), []).append(os.path.join(folder, f))
    for ext in (".safetensors", ".bin"):
        keys = sorted(k for k in by_variant if k[0] == ext)
        if keys:
            return by_variant[keys[0]]  # "" (no variant) sorts first
    return []

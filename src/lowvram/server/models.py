"""The models a server offers, by the names it lists — a request never names a path.

Three sources, in this order: `--model` (a path, or a catalogue name pulled into the HF cache), the
`--models-dir` tree (ComfyUI / A1111 `models/`: single files in diffusion_models/, unet/, checkpoints/,
Stable-diffusion/, and diffusers folders in `diffusers/NAME/`; its LoRAs and ControlNets beside them), and
the Hugging Face cache (`lowvram pull`). Each gets A1111's title "name [hash]": the hash is A1111's legacy short model hash
(sha256 of the 64 KiB at 1 MiB, 8 hex digits), which reads 64 KiB instead of hashing gigabytes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from ..errors import UserError
from ..regular_file import open_regular

DIFFUSERS_DIR = "diffusers"  # models/diffusers/NAME/model_index.json: lowvram's place for diffusers folders
LORA_DIRS = ("loras", "Lora")  # ComfyUI's and A1111's LoRA folders
WEIGHT_EXTS = (".safetensors", ".sft", ".gguf", ".ckpt", ".pt")
# A1111's legacy model hash (modules/sd_models.py `model_hash`): the 64 KiB from 1 MiB into the file.
LEGACY_HASH_OFFSET = 0x100000
LEGACY_HASH_BYTES = 0x10000


class UnknownName(UserError):
    """A model, LoRA or job the server does not list: HTTP 404."""


@dataclass
class ServedModel:
    """One model the server lists and what the Session needs to load it."""

    name: str  # what requests and /sd-models call it
    path: str  # a diffusers folder, a single file, a ComfyUI component folder
    source: str  # "--model", "models-dir" or "hf-cache"
    config: str | None = None  # for single files: a diffusers folder with tokenizers and configs
    models_dir: str | None = None  # single files from a models/ tree take their text encoders and VAE there
    hash: str = ""
    _arch: object = field(default=None, repr=False)
    _rep: object = field(default=None, repr=False)

    @property
    def title(self) -> str:
        return f"{self.name} [{self.hash}]" if self.hash else self.name

    def a1111(self) -> dict:
        """As one item of A1111's /sdapi/v1/sd-models."""
        return {"title": self.title, "model_name": self.name, "hash": self.hash or None, "sha256": None,
                "filename": self.path, "config": self.config}


def legacy_hash(path: str) -> str:
    """A1111's legacy short hash of a weights file; for a folder, of its denoiser's first weights file."""
    f = _hash_file(path)
    if f is None:
        return ""
    h = hashlib.sha256()
    with open_regular(f, "weights file") as fh:
        fh.seek(LEGACY_HASH_OFFSET)
        h.update(fh.read(LEGACY_HASH_BYTES))
    return h.hexdigest()[:8]


def _hash_file(path: str) -> str | None:
    if os.path.isfile(path):
        return path
    for sub in ("unet", "transformer", ""):
        folder = os.path.join(path, sub)
        if os.path.isdir(folder):
            files = sorted(f for f in os.listdir(folder) if f.endswith(WEIGHT_EXTS))
            if files:
                return os.path.join(folder, files[0])
    return None


class Registry:
    """The names the server lists, built at start (a restart picks up new files, as in A1111); models
    pulled from the page are added when their pull ends."""

    def __init__(self, models: list[ServedModel], loras: dict[str, str], controlnets: list | None = None) -> None:
        self.models: dict[str, ServedModel] = _named({}, models)
        self.loras = loras  # name -> file
        self.controlnets = _named({}, controlnets or [])  # name -> controlnets.ServedControlNet
        self.current: str | None = next(iter(self.models), None)

    def add_pulled(self) -> list[ServedModel]:
        """List the Hugging Face cache's models that are not listed yet (a pull from the page just ended).
        The dict is replaced, never changed in place, so a route reading the old one is not disturbed; the
        caller runs one at a time (server/pulls.py). No lock here: the Ray ingress pickles the registry."""
        known = {os.path.realpath(m.path) for m in self.models.values()}
        new = [m for m in _from_hf_cache() if os.path.realpath(m.path) not in known]
        for m in new:
            m.hash = legacy_hash(m.path)
        if new:
            self.models = _named(dict(self.models), new)
            if self.current is None:
                self.current = new[0].name
        return new

    def get(self, name: str | None) -> ServedModel:
        """A listed model by name, title ("name [hash]") or hash; None: the current one."""
        if name is None or name == "":
            if self.current is None:
                raise UserError("No model to run: start lowvram serve with --model or --models-dir.")
            return self.models[self.current]
        if not isinstance(name, str):
            raise UserError("A model name must be text: use a name from GET /sdapi/v1/sd-models.")
        want = name.strip()
        for fold in (str, str.lower):  # exact first; then any case (webuiapi lower-cases the title it picks)
            for m in self.models.values():
                if fold(want) in (fold(m.name), fold(m.title)) or (m.hash and want == m.hash):
                    return m
        raise UnknownName(f"The server has no model named {name!r}: use a name from GET /sdapi/v1/sd-models.")

    def switch(self, name: str) -> ServedModel:
        m = self.get(name)
        self.current = m.name
        return m

    def lora(self, name: str) -> str:
        if name not in self.loras:
            raise UnknownName(f"The server has no LoRA named {name!r}: use a name from GET /sdapi/v1/loras.")
        return self.loras[name]

    def controlnet(self, name):
        """A listed ControlNet by name, title or hash (server/controlnets.py)."""
        from .controlnets import lookup

        return lookup(self.controlnets, name)

    def controlnet_misfit(self, cn, model: ServedModel | None, spec=None) -> str | None:
        """Why ControlNet `cn` cannot run with a listed model (or a catalogue `spec`), or None when it fits."""
        from .controlnets import misfit

        try:
            spec = self.architecture(model) if model is not None else spec
        except UserError as e:
            return str(e).rstrip(".")
        return misfit(cn, spec, model.path if model is not None else None)

    def architecture(self, m: ServedModel):
        """The catalogue ModelSpec of a listed model (headers only, read once)."""
        if m._arch is None:
            from ..catalogue import MODELS
            from ..catalogue.folder import folder_spec
            from ..checkpoints.inspect import inspect_path, inspect_with_models_dir

            rep = inspect_with_models_dir(m.path, m.models_dir) if m.models_dir and os.path.isfile(m.path) \
                else inspect_path(m.path)
            if rep.architecture is None:
                raise UserError(f"{m.name} is a lone {rep.variant}, not a model.")
            m._arch, m._rep = folder_spec(MODELS[rep.architecture], rep), rep
        return m._arch

    def file_weights(self, m: ServedModel) -> dict:
        """What the planner needs to know of the files' own precisions (a GGUF's quant)."""
        self.architecture(m)
        return m._rep.file_weights()

    def config_for(self, m: ServedModel) -> str | None:
        """A single file's tokenizers and configs: its own --config, else a listed diffusers folder of the
        same architecture (the HF cache's, or one in models/diffusers/)."""
        if m.config or os.path.isdir(m.path):
            return m.config
        spec = self.architecture(m)
        for other in self.models.values():
            if other is not m and os.path.isfile(os.path.join(other.path, "model_index.json")):
                try:
                    if self.architecture(other).name == spec.name:
                        return other.path
                except UserError:
                    continue
        return None


def _named(listed: dict, models: list) -> dict:
    """`listed` with `models` (ServedModels, or ServedControlNets) added by name; the same name from two
    sources: both kept, the later numbered."""
    for m in models:
        name, k = m.name, 2
        while name in listed:
            name, k = f"{m.name}-{k}", k + 1
        m.name = name
        listed[name] = m
    return listed


def discover(model: str | None, models_dir: str | None) -> Registry:
    """Everything the server can run: `--model`, the models/ tree, the HF cache."""
    found: list[ServedModel] = []
    if model:
        found.append(_from_model_arg(model))
    loras: dict[str, str] = {}
    controlnets: list = []
    if models_dir:
        if not os.path.isdir(models_dir):
            raise UserError(f"--models-dir {models_dir} is not a folder: give a ComfyUI or A1111 models/ folder.")
        found += _from_models_dir(models_dir)
        loras = _loras(models_dir)
        from .controlnets import find_controlnets

        controlnets = find_controlnets(models_dir)
    found += _from_hf_cache()
    seen, unique = set(), []
    for m in found:
        key = os.path.realpath(m.path)
        if key not in seen:
            seen.add(key)
            unique.append(m)
    for m in unique:
        m.hash = legacy_hash(m.path)
    return Registry(unique, loras, controlnets)


def _stem(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    root, ext = os.path.splitext(base)
    return root if ext.lower() in WEIGHT_EXTS else base


def _from_model_arg(model: str) -> ServedModel:
    from ..hub import installed_model

    pulled = installed_model(model)  # a catalogue name -> its HF cache snapshot; a path stays a path
    if not os.path.exists(pulled.path):
        raise UserError(f"--model {model} does not exist: give a diffusers folder, a checkpoint file or a catalogue "
                        "name you pulled.")
    name = model if pulled.path != model else _stem(model)
    return ServedModel(name, pulled.path, "--model", config=pulled.config)


def _from_models_dir(models_dir: str) -> list[ServedModel]:
    from ..checkpoints.inspect import MODEL_DIRS

    out = []
    for sub in MODEL_DIRS:
        folder = os.path.join(models_dir, sub)
        if not os.path.isdir(folder):
            continue
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for f in sorted(files):
                if f.lower().endswith(WEIGHT_EXTS):
                    path = os.path.join(root, f)
                    out.append(ServedModel(_stem(f), path, "models-dir", models_dir=models_dir))
    folder = os.path.join(models_dir, DIFFUSERS_DIR)
    if os.path.isdir(folder):
        for d in sorted(os.listdir(folder)):
            path = os.path.join(folder, d)
            if os.path.isfile(os.path.join(path, "model_index.json")):
                out.append(ServedModel(d, path, "models-dir"))
    return out


def _from_hf_cache() -> list[ServedModel]:
    from ..hub import installed

    out = []
    for row in installed():
        if row.variant == "diffusers":
            out.append(ServedModel(row.name, row.path, "hf-cache"))
        elif row.variant.startswith("GGUF") and row.config:
            out.append(ServedModel(f"{row.name}-{row.variant.split()[-1]}", row.path, "hf-cache", config=row.config))
    return out


def _loras(models_dir: str) -> dict[str, str]:
    out = {}
    for sub in LORA_DIRS:
        folder = os.path.join(models_dir, sub)
        if os.path.isdir(folder):
            for f in sorted(os.listdir(folder)):
                if f.lower().endswith((".safetensors", ".sft")):
                    out.setdefault(_stem(f), os.path.join(folder, f))
    return out

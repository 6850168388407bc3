"""`lowvram pull` / `lowvram list`: catalogue models in the Hugging Face cache, via huggingface_hub.

Downloads are resumable, show huggingface_hub's progress bars, and honour HF_HOME, HF_TOKEN and
HF_ENDPOINT (the tests point it at a local fake hub). Only what lowvram loads is fetched: the diffusers
layout's configs, tokenizers and safetensors weights — not the duplicate single-file checkpoint many
repos also carry at their root, nor .bin / .ckpt copies. With a GGUF quant, the denoiser comes as that
one .gguf file from the GGUF repo and the diffusers repo gives everything else (its denoiser's config,
not its weights). Nothing else in lowvram ever downloads.

Which pulled weights `generate --model NAME` uses: the variant pulled last (each pull touches the
weights it chose, so re-pulling an already downloaded variant selects it again).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field

from .catalogue import ModelSpec, get_model
from .catalogue.quants import Quant
from .errors import UserError
from .hub_http import configure_hub

# What a diffusers-layout repo needs for lowvram to load it.
ALLOW = ["model_index.json", "*/config.json", "*/*_config.json", "*/tokenizer*", "*/vocab*", "*/merges.txt",
         "*/spiece.model", "*/special_tokens_map.json", "*/added_tokens.json", "*/preprocessor_config.json"]


def _weights(variant: str | None, folder: str = "*") -> list[str]:
    if variant:
        return [f"{folder}/*.{variant}.safetensors", f"{folder}/*.{variant}-*.safetensors", f"{folder}/*.safetensors.index.json"]
    return [f"{folder}/*.safetensors", f"{folder}/*.safetensors.index.json"]


@dataclass(frozen=True)
class Fetch:
    """One snapshot download: a repo and the patterns that pick what lowvram needs from it."""

    repo: str
    allow: tuple[str, ...]
    ignore: tuple[str, ...] = ()
    what: str = ""  # for the report: "components" / "full weights" / "GGUF Q4_K_S"


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    cached: bool


def fetches(spec: ModelSpec, variant: str | None = None, quant: Quant | None = None) -> list[Fetch]:
    """What to download for `spec`: its diffusers repo (all of it, or without the denoiser's weights when
    a GGUF quant replaces them) and the quant's single file."""
    ignore = ["*.bin", "*.ckpt", "*.pt", "*.msgpack", "*.onnx*"] + ([] if variant else ["*.fp16.*", "*.fp32.*"])
    base = ALLOW + _weights(variant)
    if spec.family == "deepfloyd-if":  # three stages, three repos; stage I's snapshot is what generate loads
        from .catalogue.deepfloyd import STAGES

        # Stage II's repo carries its own copy of the T5 (and each IF repo a safety checker): lowvram
        # uses stage I's T5 for both stages and loads no safety checker, so neither is downloaded.
        skip = ["safety_checker/*", "watermarker/*", "feature_extractor/*"]
        return [Fetch(s.repo, tuple(base), tuple(ignore + skip + (["text_encoder/*", "tokenizer/*"] if s.name == "II" else [])),
                      f"stage {s.name}") for s in STAGES]
    if quant is None:
        return [Fetch(spec.hf_repo, tuple(base), tuple(ignore), "full weights")]
    g = spec.gguf
    return [Fetch(g.repo, (g.filename(quant.name),), (), f"GGUF {quant.name}"),
            Fetch(spec.hf_repo, tuple(base), tuple(ignore + _weights(None, g.component)), "components")]


@contextmanager
def _hub_errors(repo: str):
    """huggingface_hub's exceptions -> one sentence saying what to do."""
    from huggingface_hub.errors import DryRunError, HfHubHTTPError, RepositoryNotFoundError

    try:
        yield
    except (DryRunError, RepositoryNotFoundError, HfHubHTTPError, OSError) as e:
        if isinstance(e, DryRunError) and e.__cause__ is not None:
            e = e.__cause__  # the preview could not reach the repo: say why
        if isinstance(e, RepositoryNotFoundError):
            raise UserError(f"{repo} was not found or needs access: accept its licence on the hub, then set HF_TOKEN.") from None
        text = " ".join(str(e).split())
        if "404" in text or "not found" in text.lower():
            raise UserError(f"{repo} was not found on the hub: check HF_ENDPOINT, or accept the model's "
                            "licence on the hub and set HF_TOKEN.") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"Downloading {repo} failed ({first}); check the network and disk space, "
                        "then run the same command again to resume.") from None


def preview(fetch: Fetch) -> list[FileInfo]:
    """The files `download(fetch)` would fetch, with sizes and whether they are cached — no download."""
    configure_hub()
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet_before = are_progress_bars_disabled()
    disable_progress_bars()  # the dry run's own "Fetching N files" bar would look like a download
    try:
        with _hub_errors(fetch.repo):
            infos = snapshot_download(fetch.repo, allow_patterns=list(fetch.allow), ignore_patterns=list(fetch.ignore),
                                      dry_run=True)
    finally:
        if not quiet_before:
            enable_progress_bars()
    files = sorted((FileInfo(i.filename, i.file_size or 0, i.is_cached) for i in infos), key=lambda f: f.path)
    if not files and fetch.what.startswith("GGUF"):
        raise UserError(f"{fetch.repo} has no {fetch.allow[0]}: the catalogue's list of its quants is out of date "
                        "or HF_ENDPOINT points at another hub; choose another --gguf.")
    if not files:
        raise UserError(f"{fetch.repo} has none of the files lowvram needs ({', '.join(fetch.allow[:3])}...); "
                        "check HF_ENDPOINT, or the catalogue entry is out of date.")
    return files


@dataclass(frozen=True)
class Pulled:
    path: str  # what `generate --model` loads: the diffusers snapshot, or the .gguf file
    config: str | None = None  # for a .gguf: the diffusers snapshot with the other components


def download(spec: ModelSpec, todo: list[Fetch], tqdm_class=None) -> Pulled:
    """Run the fetches (resumable; huggingface_hub's progress bars, or `tqdm_class`'s — the server's
    hub_progress.Meter) and mark the result as pulled last."""
    configure_hub()
    from huggingface_hub import snapshot_download

    folders = []
    for f in todo:
        with _hub_errors(f.repo):
            folders.append(snapshot_download(f.repo, allow_patterns=list(f.allow), ignore_patterns=list(f.ignore),
                                             tqdm_class=tqdm_class))
    if todo[0].what.startswith("GGUF"):
        pulled = Pulled(os.path.join(folders[0], todo[0].allow[0]), folders[1])
        _touch([pulled.path])
    else:  # full weights (for DeepFloyd IF: stage I's snapshot; its other stages are found beside it)
        pulled = Pulled(folders[0])
        _touch(_denoiser_weights(spec, folders[0]))
    return pulled


def _touch(paths: list[str]) -> None:
    """Mark weights as the ones pulled last (their blob's mtime); a read-only cache only loses the mark."""
    for p in paths:
        try:
            os.utime(p)
        except OSError:
            pass


def _denoiser_weights(spec: ModelSpec, snapshot: str) -> list[str]:
    from .checkpoints.inspect import safetensors_files

    files = []
    for c in spec.by_role("denoiser"):
        sub = os.path.join(snapshot, c.name)
        if os.path.isdir(sub):
            files += safetensors_files(sub)
    return files


@dataclass(frozen=True)
class Installed:
    name: str
    variant: str  # "diffusers" (full weights), "GGUF Q4_K_S", or "components only" (not loadable alone)
    repo: str
    path: str  # the snapshot folder, or the .gguf file
    size_bytes: int  # on disk, of the files this variant loads
    config: str | None = None  # for a GGUF variant: the snapshot with its other components
    in_use: bool = False  # what `generate --model NAME` loads: the usable variant pulled last
    mtime: float = field(default=0.0, repr=False)


def installed() -> list[Installed]:
    """Catalogue models present in the HF cache: full diffusers snapshots and GGUF files with their components."""
    from dataclasses import replace

    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    from .catalogue import MODELS

    try:
        info = scan_cache_dir()
    except CacheNotFound:
        return []
    repos = {r.repo_id: r for r in info.repos if r.revisions}
    out: list[Installed] = []
    for spec in MODELS.values():
        base = repos.get(spec.hf_repo)
        snapshot, base_rows = None, []
        if base is not None:
            rev = max(base.revisions, key=lambda r: r.last_modified)
            snapshot = str(rev.snapshot_path)
            weights = _denoiser_weights(spec, snapshot)
            if weights:
                base_rows.append(Installed(spec.name, "diffusers", base.repo_id, snapshot, base.size_on_disk,
                                           mtime=_mtime(weights)))
        ggufs = []
        if spec.gguf is not None and spec.gguf.repo in repos:
            ggufs = _gguf_rows(spec, repos[spec.gguf.repo], snapshot, base)
        rows = base_rows + ggufs
        if base is not None and not rows:
            rows = [Installed(spec.name, "components only", base.repo_id, snapshot, base.size_on_disk)]
        usable = [r for r in rows if r.variant == "diffusers" or (r.variant.startswith("GGUF") and r.config)]
        if usable:
            last = max(usable, key=lambda r: r.mtime)
            rows = [replace(r, in_use=r is last) for r in rows]
        out += rows
    return sorted(out, key=lambda i: (i.name, i.variant))


def _gguf_rows(spec: ModelSpec, repo, snapshot: str | None, base) -> list[Installed]:
    """One row per published quant file in the GGUF repo's cache (any revision; the newest copy wins)."""
    components = 0
    if base is not None:
        rev = max(base.revisions, key=lambda r: r.last_modified)
        skip = os.path.join(str(rev.snapshot_path), spec.gguf.component) + os.sep
        components = sum(f.size_on_disk for f in rev.files if not (str(f.file_path).startswith(skip)
                                                                   and f.file_name.endswith(".safetensors")))
    newest: dict[str, tuple[float, object]] = {}
    for rev in repo.revisions:
        for f in rev.files:
            quant = spec.gguf.quant_of(f.file_name)
            if quant is None:
                continue
            if quant.name not in newest or rev.last_modified > newest[quant.name][0]:
                newest[quant.name] = (rev.last_modified, f)
    return [Installed(spec.name, f"GGUF {q}", repo.repo_id, str(f.file_path), f.size_on_disk + components,
                      config=snapshot, mtime=_mtime([str(f.file_path)]))
            for q, (_, f) in newest.items()]


def _mtime(paths: list[str]) -> float:
    return max((os.stat(p).st_mtime for p in paths if os.path.exists(p)), default=0.0)


def installed_model(name_or_path: str) -> Pulled:
    """A catalogue name that is installed -> what generate loads (the variant pulled last); anything
    else is returned unchanged, as a path."""
    if os.path.exists(name_or_path):
        return Pulled(name_or_path)
    try:
        spec = get_model(name_or_path)
    except UserError:
        return Pulled(name_or_path)
    rows = [i for i in installed() if i.name == spec.name]
    chosen = next((i for i in rows if i.in_use), None)
    if chosen is not None:
        return Pulled(chosen.path, chosen.config)
    gguf = next((i for i in rows if i.variant.startswith("GGUF")), None)
    if gguf is not None:
        quant = gguf.variant.split()[-1]
        raise UserError(f"{spec.name} has its {quant} GGUF file but not its text encoders and VAE: run "
                        f"`lowvram pull {spec.name} --gguf {quant}` to fetch them.")
    if rows:
        raise UserError(f"{spec.name} has only its components installed, not its {spec.by_role('denoiser')[0].name} weights: "
                        f"run `lowvram pull {spec.name}` (full weights) or `lowvram pull {spec.name} --gguf auto`.")
    raise UserError(f"{spec.name} is not installed: run `lowvram pull {spec.name}`, or give the path of its files.")

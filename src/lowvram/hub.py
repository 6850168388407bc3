"""`lowvram pull` / `lowvram list`: catalogue models in the Hugging Face cache, via huggingface_hub.

Downloads are resumable, show huggingface_hub's progress bars, and honour HF_HOME, HF_TOKEN and
HF_ENDPOINT (the tests point it at a local fake hub). Only what lowvram loads is fetched: the diffusers
layout's configs, tokenizers and safetensors weights — not the duplicate single-file checkpoint many
repos also carry at their root, nor .bin / .ckpt copies. Nothing else in lowvram ever downloads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .catalogue import ModelSpec, get_model
from .errors import UserError

# What a diffusers-layout repo needs for lowvram to load it.
ALLOW = ["model_index.json", "*/config.json", "*/*_config.json", "*/tokenizer*", "*/vocab*", "*/merges.txt",
         "*/spiece.model", "*/special_tokens_map.json", "*/added_tokens.json", "*/preprocessor_config.json"]


def _weights(variant: str | None) -> list[str]:
    if variant:
        return [f"*/*.{variant}.safetensors", f"*/*.{variant}-*.safetensors", "*/*.safetensors.index.json"]
    return ["*/*.safetensors", "*/*.safetensors.index.json"]


def pull(name: str, variant: str | None = None) -> str:
    """Download catalogue model `name` into the HF cache; returns the local snapshot folder (for DeepFloyd
    IF, whose three stages are three repos, stage I's: the other two are found beside it in the cache)."""
    spec = get_model(name)
    if spec.family == "deepfloyd-if":
        from .catalogue.deepfloyd import STAGES

        # Stage II's repo carries its own copy of the T5 (and each IF repo a safety checker): lowvram
        # uses stage I's T5 for both stages and loads no safety checker, so neither is downloaded.
        skip = ["safety_checker/*", "watermarker/*", "feature_extractor/*"]
        paths = [_download(s.repo, variant, skip + (["text_encoder/*", "tokenizer/*"] if s.name == "II" else []))
                 for s in STAGES]
        return paths[0]
    return _download(spec.hf_repo, variant)


def _download(repo: str, variant: str | None, extra_ignore: list[str] | None = None) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    patterns = ALLOW + _weights(variant)
    ignore = ["*.bin", "*.ckpt", "*.pt", "*.msgpack", "*.onnx*"] + ([] if variant else ["*.fp16.*", "*.fp32.*"])
    try:
        return snapshot_download(repo, allow_patterns=patterns, ignore_patterns=ignore + (extra_ignore or []))
    except RepositoryNotFoundError:
        raise UserError(f"{repo} was not found or needs access: accept its licence on the hub, then set HF_TOKEN.") from None
    except (HfHubHTTPError, OSError) as e:
        text = " ".join(str(e).split())
        if "404" in text or "not found" in text.lower():
            raise UserError(f"{repo} was not found on the hub: check HF_ENDPOINT, or accept the model's "
                            "licence on the hub and set HF_TOKEN.") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"Downloading {repo} failed ({first}); check the network and disk space, "
                        "then run the same command again to resume.") from None


def cached_snapshot(hub_dir: str, repo: str) -> str | None:
    """The snapshot folder of `repo` in the HF hub cache at `hub_dir`: its `main` revision, else the newest."""
    base = os.path.join(hub_dir, "models--" + repo.replace("/", "--"))
    snapshots = os.path.join(base, "snapshots")
    try:
        with open(os.path.join(base, "refs", "main")) as f:
            main = os.path.join(snapshots, f.read().strip())
        if os.path.isdir(main):
            return main
    except OSError:
        pass
    try:
        revs = [os.path.join(snapshots, r) for r in os.listdir(snapshots)]
    except OSError:
        return None
    revs = [r for r in revs if os.path.isdir(r)]
    return max(revs, key=os.path.getmtime) if revs else None


@dataclass(frozen=True)
class Installed:
    name: str
    repo: str
    path: str
    size_bytes: int


def installed() -> list[Installed]:
    """Catalogue models present in the HF cache (by their diffusers repo)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    from .catalogue import MODELS

    by_repo: dict[str, ModelSpec] = {m.hf_repo: m for m in MODELS.values()}
    try:
        info = scan_cache_dir()
    except CacheNotFound:
        return []
    out = []
    for repo in info.repos:
        spec = by_repo.get(repo.repo_id)
        if spec is None or not repo.revisions:
            continue
        rev = max(repo.revisions, key=lambda r: r.last_modified)
        out.append(Installed(spec.name, repo.repo_id, str(rev.snapshot_path), repo.size_on_disk))
    return sorted(out, key=lambda i: i.name)


def local_path(name_or_path: str) -> str:
    """A catalogue name that is installed -> its snapshot folder; anything else is returned unchanged."""
    if os.path.exists(name_or_path):
        return name_or_path
    try:
        spec = get_model(name_or_path)
    except UserError:
        return name_or_path
    for i in installed():
        if i.name == spec.name:
            return i.path
    raise UserError(f"{spec.name} is not installed: run `lowvram pull {spec.name}`, or give the path of its files.")

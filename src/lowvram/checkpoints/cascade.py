"""Where the three stage folders of a DeepFloyd IF cascade are, from model_index.json files only.

IF is published as three diffusers repos (catalogue.deepfloyd.STAGES). A user has them as
- one folder holding the three as sub-folders (any names; `lowvram pull` and the docs use the repo names):
  `IF/IF-I-XL-v1.0/`, `IF/IF-II-L-v1.0/`, `IF/stable-diffusion-x4-upscaler/`;
- or one stage folder, with the other stages found next to it (its siblings);
- or, for a snapshot in the Hugging Face cache (what `lowvram pull deepfloyd-if` writes), the cache's
  snapshots of the other two repos.
Each stage is recognised by its model_index.json `_class_name`, never by its folder name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..catalogue.deepfloyd import STAGES, Stage
from ..errors import UserError
from .diffusers_index import class_name

BY_PIPELINE = {s.pipeline: s for s in STAGES}


@dataclass(frozen=True)
class CascadeFolders:
    root: str  # the folder the stages are looked for in
    folders: dict[str, str]  # stage name -> its diffusers folder, for the stages found
    hf_cache: bool = False  # the given folder is a snapshot in the Hugging Face cache

    @property
    def missing(self) -> list[Stage]:
        return [s for s in STAGES if s.name not in self.folders]

    def require_all(self) -> None:
        """One sentence naming the first missing stage, the folder it belongs in and how to get it."""
        if not self.missing:
            return
        s = self.missing[0]
        others = "" if len(self.missing) == 1 else f" (stage {' and '.join(m.name for m in self.missing[1:])} is missing too)"
        if self.hf_cache:
            raise UserError(f"DeepFloyd IF stage {s.name} ({s.repo}) is not in the Hugging Face cache: "
                            f"run `lowvram pull deepfloyd-if` to download it{others}.")
        raise UserError(f"DeepFloyd IF stage {s.name} is missing: put a diffusers copy of {s.repo} ({s.pipeline}) in "
                        f"{os.path.join(self.root, s.folder)}, or run `lowvram pull deepfloyd-if`{others}.")


def find_cascade(path: str) -> CascadeFolders | None:
    """The stage folders for `path` (a cascade folder or one stage's folder); None if it is neither."""
    if not os.path.isdir(path):
        return None
    own = BY_PIPELINE.get(class_name(path) or "")
    if own is not None:  # one stage's folder: the others are its siblings, or in the same HF cache
        root = os.path.dirname(os.path.abspath(path))
        hub_dir = _hub_dir(path)
        if hub_dir is None:
            return CascadeFolders(root, _stages_in(root, keep={own.name: path}))
        from .hf_cache import cached_snapshot

        folders = {s.name: path if s is own else cached_snapshot(hub_dir, s.repo) for s in STAGES}
        return CascadeFolders(root, {k: v for k, v in folders.items() if v}, hf_cache=True)
    folders = _stages_in(path)
    # a folder holding only an x4 upscaler is not taken for an IF cascade: stage I or II must be there
    if not folders.keys() & {"I", "II"}:
        return None
    return CascadeFolders(os.path.abspath(path), folders)


def _stages_in(root: str, keep: dict[str, str] | None = None) -> dict[str, str]:
    """Stage name -> sub-folder of `root`; a stage with several candidates takes the one named like its
    hub repo, else it is refused (which copy is meant cannot be guessed)."""
    found: dict[str, list[str]] = {}
    try:
        names = sorted(os.listdir(root))
    except OSError:
        names = []
    for name in names:
        sub = os.path.join(root, name)
        stage = BY_PIPELINE.get(class_name(sub) or "") if os.path.isdir(sub) else None
        if stage is not None:
            found.setdefault(stage.name, []).append(sub)
    out = dict(keep or {})
    for s in STAGES:
        cands = found.get(s.name, [])
        if s.name in out or not cands:
            continue
        named = [c for c in cands if os.path.basename(c) == s.folder]
        if len(cands) > 1 and not named:
            raise UserError(f"{root} holds several DeepFloyd IF stage {s.name} folders ({', '.join(map(os.path.basename, cands))}): "
                            f"keep one, or name the one to use {s.folder}.")
        out[s.name] = (named or cands)[0]
    return out


def _hub_dir(folder: str) -> str | None:
    """The Hugging Face hub cache folder if `folder` is one of its snapshots (<hub>/models--O--N/snapshots/REV)."""
    snapshots = os.path.dirname(os.path.abspath(folder))
    repo_dir = os.path.dirname(snapshots)
    if os.path.basename(snapshots) != "snapshots" or not os.path.basename(repo_dir).startswith("models--"):
        return None
    return os.path.dirname(repo_dir)

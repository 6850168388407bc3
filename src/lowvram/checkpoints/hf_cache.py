"""Find a repo's snapshot in the Hugging Face hub cache: inspection and `pull` read the cache alike."""

from __future__ import annotations

import os

from ..errors import UserError
from ..regular_file import open_regular

MAX_REF_BYTES = 256  # a refs/main file holds one commit hash; more is not a ref


def cached_snapshot(hub_dir: str, repo: str) -> str | None:
    """The snapshot folder of `repo` in the HF hub cache at `hub_dir`: its `main` revision, else the newest."""
    base = os.path.join(hub_dir, "models--" + repo.replace("/", "--"))
    snapshots = os.path.join(base, "snapshots")
    try:
        with open_regular(os.path.join(base, "refs", "main"), "hub cache ref") as f:
            main = os.path.join(snapshots, f.read(MAX_REF_BYTES).decode("utf-8", "replace").strip())
        if os.path.isdir(main):
            return main
    except (OSError, UserError):  # no ref, or a damaged one: fall back to the newest snapshot
        pass
    try:
        revs = [os.path.join(snapshots, r) for r in os.listdir(snapshots)]
    except OSError:
        return None
    revs = [r for r in revs if os.path.isdir(r)]
    return max(revs, key=os.path.getmtime) if revs else None

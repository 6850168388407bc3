"""Where lowvram keeps its on-disk caches (simulation results, parameter counts).

The user cache dir by default (platformdirs), `LOWVRAM_CACHE_DIR` to override (tests use a temp dir).
"""

from __future__ import annotations

import os


def cache_root() -> str:
    d = os.environ.get("LOWVRAM_CACHE_DIR")
    if d:
        return d
    import platformdirs

    return platformdirs.user_cache_dir("lowvram")


def cache_path(kind: str, name: str) -> str:
    return os.path.join(cache_root(), kind, name)

"""Where lowvram keeps its on-disk caches (simulation results, parameter counts).

The user cache dir by default (platformdirs), `LOWVRAM_CACHE_DIR` to override (tests use a temp dir).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable


def cache_root() -> str:
    d = os.environ.get("LOWVRAM_CACHE_DIR")
    if d:
        return d
    import platformdirs

    return platformdirs.user_cache_dir("lowvram")


def cache_path(kind: str, name: str) -> str:
    return os.path.join(cache_root(), kind, name)


def cached_json(kind: str, key: Any, compute: Callable[[], Any]) -> Any:
    """The JSON value cached under (kind, key), or compute(), store it atomically and return it.
    A damaged or unwritable cache only costs time: it is recomputed, never an error."""
    blob = json.dumps(key, sort_keys=True, default=str)
    path = cache_path(kind, hashlib.sha256(blob.encode()).hexdigest()[:32] + ".json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    value = compute()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(value, f)
        os.replace(tmp, path)
    except OSError:
        pass
    return value

"""Where lowvram keeps its on-disk caches (simulation results, parameter counts).

The user cache dir by default (platformdirs), `LOWVRAM_CACHE_DIR` to override (tests use a temp dir).
Behind it, the package ships the answers for the catalogue at its default workloads on every card in the
table (`shipped.json`, written by `python -m lowvram.ship`), so a first `lowvram plan` or `lowvram gpus`
needs no simulation and never imports torch. Shipped answers are keyed without library versions: they
were computed with the versions the file names, and a change of the simulation bumps its own key.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from typing import Any, Callable


def cache_root() -> str:
    d = os.environ.get("LOWVRAM_CACHE_DIR")
    if d:
        return d
    import platformdirs

    return platformdirs.user_cache_dir("lowvram")


def cache_path(kind: str, name: str) -> str:
    return os.path.join(cache_root(), kind, name)


SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shipped.json")
RECORD: dict | None = None  # set by `lowvram.ship` to collect every answer a run of plans needs


def _digest(key: Any) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


@lru_cache(maxsize=None)
def library_versions() -> tuple[str, ...]:
    """Versions of the libraries whose code the counts and simulations come from (no import needed);
    looked up once per process: each lookup scans the installed distributions (~17 ms for the three),
    and every cache lookup keys on them."""
    from importlib.metadata import version

    return (version("torch"), version("diffusers"), version("transformers"))


def _user_key(key: Any) -> Any:
    """The user cache also keys on the versions of the libraries whose code computed the answer
    (a shipped answer does not: it was computed with the versions shipped.json names)."""
    return {"key": key, "versions": list(library_versions())}


def shipped_key(key: Any) -> str:
    return _digest(key)


_SHIPPED: dict | None = None


def shipped(kind: str, key: Any) -> Any:
    """The shipped answer for (kind, key), or None."""
    global _SHIPPED
    if _SHIPPED is None:
        try:
            with open(SHIPPED) as f:
                _SHIPPED = json.load(f).get("answers", {})
        except (OSError, ValueError):
            _SHIPPED = {}
    return _SHIPPED.get(kind, {}).get(shipped_key(key))


def cached_json(kind: str, key: Any, compute: Callable[[], Any]) -> Any:
    """The JSON value cached under (kind, key) — in the user cache (keyed on the library versions too),
    else shipped with the package — or
    compute(), store it atomically and return it. A damaged or unwritable cache only costs time: it is
    recomputed, never an error."""
    value = _cached_json(kind, key, compute)
    if RECORD is not None:
        RECORD.setdefault(kind, {})[shipped_key(key)] = value
    return value


def lookup_json(kind: str, key: Any) -> Any:
    """The value cached under (kind, key) in the user cache or shipped with the package, or None: never
    computes (the readout's estimates look for answers known at other sizes this way)."""
    from .errors import UserError
    from .jsonfile import read_json

    path = cache_path(kind, _digest(_user_key(key)) + ".json")
    try:
        if os.path.exists(path):
            return read_json(path, "a lowvram cache entry", object)
    except UserError:  # damaged: as if missing (cached_json recomputes and overwrites it)
        pass
    if os.environ.get("LOWVRAM_NO_SHIPPED") != "1":  # tests of the simulator itself switch it off
        return shipped(kind, key)
    return None


def _cached_json(kind: str, key: Any, compute: Callable[[], Any]) -> Any:
    found = lookup_json(kind, key)
    if found is not None:
        return found
    path = cache_path(kind, _digest(_user_key(key)) + ".json")
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

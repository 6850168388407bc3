"""The short hashes A1111 writes in infotext, so sites and image browsers can find the model and LoRAs.

`Model hash` is the first 10 hex digits of the checkpoint file's sha256 (A1111 `modules/hashes.py`,
`sd_models.CheckpointInfo.shorthash`). `Lora hashes` uses the first 12 hex digits of the LoRA's
"addnet" hash — for .safetensors the sha256 of the tensor data after the JSON header (kohya-ss
`train_util.addnet_hash_safetensors`, so editing the metadata does not change it), for other files the
sha256 of the whole file (A1111 `extensions-builtin/Lora/network.py`, `NetworkOnDisk.set_hash`).
hashlib does the hashing; results are cached by path, size and modification time, as A1111 caches
them, because hashing a 6 GB checkpoint takes seconds.
"""

from __future__ import annotations

import functools
import hashlib
import os

from ..regular_file import open_regular

MODEL_HASH_DIGITS = 10  # A1111 CheckpointInfo.shorthash = sha256[0:10]
LORA_HASH_DIGITS = 12  # A1111 NetworkOnDisk.shorthash = hash[0:12]
CHUNK = 1 << 20  # bytes read per update, as A1111 reads (blksize = 1024 * 1024)


def _sha256(path: str, offset: int) -> str:
    h = hashlib.sha256()
    with open_regular(path, "weights file") as f:
        f.seek(offset)
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _safetensors_data_offset(path: str) -> int:
    """Where a .safetensors file's tensor data starts: 8 bytes of header length, then the header."""
    with open_regular(path, "safetensors file") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def _cached_sha256(path: str, addnet: bool) -> str:
    st = os.stat(path)
    return _sha256_of(os.path.abspath(path), st.st_size, st.st_mtime_ns, addnet)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int, addnet: bool) -> str:
    """The sha256 of the file (`addnet`: of its tensor data only), memoised in the process too: a Session
    writes the same model's and LoRAs' hashes into every request's infotext, and the on-disk cache costs
    a header read, a cache file read and library version look-ups each time."""
    from ..cache import cached_json

    offset = _safetensors_data_offset(path) if addnet else 0
    key = {"path": path, "size": size, "mtime_ns": mtime_ns, "offset": offset}
    return cached_json("sha256", key, lambda: _sha256(path, offset))


def model_hash(path: str) -> str | None:
    """A1111's `Model hash` of a checkpoint file; None for a folder (A1111 hashes single files only)."""
    if not os.path.isfile(path):
        return None
    return _cached_sha256(path, False)[:MODEL_HASH_DIGITS]


def lora_hash(path: str) -> str:
    """A1111's short hash of a LoRA file (the addnet hash for .safetensors)."""
    return _cached_sha256(path, path.lower().endswith(".safetensors"))[:LORA_HASH_DIGITS]


def lora_name(path: str) -> str:
    """The name A1111 gives a LoRA file in `<lora:name:weight>`: its file name without the extension."""
    return os.path.splitext(os.path.basename(path))[0]

"""Property-based fuzzing of the formats lowvram reads (issue #9): mutated safetensors headers, GGUF
files and diffusers folders must give a correct answer or one UserError sentence — never another
exception, and in bounded time (pytest-timeout, Hypothesis deadlines) and memory (tracemalloc).

The loops call the reading functions in-process for speed; tests/test_bad_input.py drives the CLI.
"""

import json
import os
import struct
import tempfile
import tracemalloc
from contextlib import contextmanager

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lowvram.checkpoints.gguf_header import read_gguf_header
from lowvram.checkpoints.inspect import inspect_path
from lowvram.checkpoints.safetensors_header import DTYPE_BYTES, read_safetensors_header
from lowvram.errors import UserError

pytestmark = pytest.mark.timeout(300)

# Per example: generous for a 2-core machine shared with other jobs.
FUZZ = settings(max_examples=75, deadline=10_000, suppress_health_check=[HealthCheck.too_slow], database=None)
# What reading one small mutated file may allocate (Python and numpy): the valid files are < 64 kB.
MAX_ALLOC = 64 * 2**20

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)


def _outcome(fn, *args):
    """fn(*args) under a memory bound: its result, or None for a UserError; anything else fails the test."""
    tracemalloc.start()
    try:
        return fn(*args)
    except UserError as e:
        assert str(e) and "\n" not in str(e) and "Traceback" not in str(e)
        return None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < MAX_ALLOC, peak


@contextmanager
def _on_disk(name: str, raw: bytes):
    """`raw` as a file `name` in a fresh temporary folder (a Hypothesis example cannot take tmp_path)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, name)
        with open(path, "wb") as f:
            f.write(raw)
        yield path


def _flip(raw: bytearray, flips, span: int | None = None) -> None:
    """Set each (where, byte): `where` in [0, 1) of the first `span` bytes (all of them by default)."""
    for where, byte in flips:
        raw[int(where * (len(raw) if span is None else span))] = byte


def _cut(raw: bytearray, cut: float | None) -> bytearray:
    return raw if cut is None else raw[: int(cut * len(raw))]


# ---- safetensors ----------------------------------------------------------------------------------------

def _base_header() -> dict:
    """A small valid header: four tensors tiling 4 + 8 + 64 + 0 bytes."""
    entries = [("a.weight", "F32", [1]), ("b.bias", "BF16", [2, 2]), ("c.weight", "F16", [4, 8]), ("empty", "F32", [0])]
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dtype, shape in entries:
        n = int(np.prod(shape)) * int(DTYPE_BYTES[dtype])
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    return header


def _data_size(header: dict) -> int:
    return max(e["data_offsets"][1] for k, e in header.items() if k != "__metadata__")


def _safetensors(header: bytes, data: int) -> bytes:
    return struct.pack("<Q", len(header)) + header + b"\0" * data


def _check_safetensors_answer(path: str, got) -> None:
    """A header that was accepted describes the file exactly: tensors tile the data, sizes agree."""
    tensors, _ = got
    size = os.path.getsize(path)
    hlen = struct.unpack("<Q", open(path, "rb").read(8))[0]
    spans = sorted((t.offset, t.offset + t.nbytes) for t in tensors)
    pos = 8 + hlen
    for a, b in spans:
        assert a == pos
        pos = b
    assert pos == size
    for t in tensors:
        assert t.nbytes == -(-int(np.prod(t.shape, dtype=object)) * round(DTYPE_BYTES[t.dtype] * 8) // 8)


field_edits = st.one_of(
    st.tuples(st.just("dtype"), st.sampled_from(["F32", "F16", "BF16", "I8", "F4", "X", ""]) | json_values),
    st.tuples(st.just("shape"), st.lists(st.integers(min_value=-2, max_value=2**66), max_size=5) | json_values),
    st.tuples(st.just("data_offsets"), st.lists(st.integers(min_value=-8, max_value=2**66), min_size=2, max_size=2) | json_values),
    st.tuples(st.just("entry"), json_values),
)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 4), field_edits), max_size=3), copy_range=st.booleans(),
       data_delta=st.integers(-16, 16))
def test_safetensors_header_fields(edits, copy_range, data_delta):
    header = _base_header()
    names = [k for k in header if k != "__metadata__"]
    for which, (field, value) in edits:
        name = (names + ["__metadata__"])[which]
        if field == "entry":
            header[name] = value
        elif isinstance(header[name], dict):
            header[name][field] = value
    if copy_range:  # a second tensor aliasing the first one's bytes
        header["alias"] = json.loads(json.dumps(_base_header()["c.weight"]))
    data = max(0, _data_size(_base_header()) + data_delta)
    with _on_disk("m.safetensors", _safetensors(json.dumps(header).encode(), data)) as path:
        got = _outcome(read_safetensors_header, path)
        if got is not None:
            _check_safetensors_answer(path, got)
        _outcome(inspect_path, path)


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=6),
       cut=st.none() | st.floats(0, 1), prefix=st.none() | st.integers(0, 2**64 - 1))
def test_safetensors_bytes(flips, cut, prefix):
    raw = bytearray(_safetensors(json.dumps(_base_header()).encode(), _data_size(_base_header())))
    _flip(raw, flips)
    if prefix is not None:
        raw[:8] = struct.pack("<Q", prefix)
    with _on_disk("m.safetensors", _cut(raw, cut)) as path:
        got = _outcome(read_safetensors_header, path)
        if got is not None:
            _check_safetensors_answer(path, got)


# ---- GGUF -----------------------------------------------------------------------------------------------

def _base_gguf(path: str) -> int:
    """A small valid GGUF (metadata of each kind, three tensors); returns where its data region starts."""
    w = gguf.GGUFWriter(path, "flux", use_temp_file=False)
    w.add_string("general.name", "fuzz")
    w.add_uint32("fuzz.count", 7)
    w.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])
    w.add_array("tokenizer.ggml.scores", [0.5, 0.25])
    w.add_tensor("double_blocks.0.img_attn.qkv.weight", np.zeros((4, 32), np.float32))
    w.add_tensor("double_blocks.0.img_attn.norm.query_norm.scale", np.ones(32, np.float16))
    q = gguf.quants.quantize(np.zeros((2, 64), np.float32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("final_layer.linear.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return gguf.GGUFReader(path).data_offset


@pytest.fixture(scope="module")
def gguf_base(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("gguf") / "base.gguf")
    start = _base_gguf(path)
    return open(path, "rb").read(), start


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4),
       words=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                st.sampled_from([2**64 - 1, 2**63, 2**62, 2**40, 2**32, 2**31, 65536, 5, 1, 0])), max_size=3),
       cut=st.none() | st.floats(0, 1))
def test_gguf_mutations(gguf_base, flips, words, cut):
    base, header_end = gguf_base
    raw = bytearray(base)
    _flip(raw, flips, header_end)  # the header: mutating tensor data changes nothing lowvram reads
    for where, value in words:  # a declared count, length, dimension or offset set to something absurd
        at = min(int(where * header_end), len(raw) - 8)
        struct.pack_into("<Q", raw, at, value)
    raw = _cut(raw, cut)
    with _on_disk("flux1-dev-Q8_0.gguf", raw) as path:
        got = _outcome(read_gguf_header, path)
        if got is not None:
            tensors, _ = got
            for t in tensors:
                assert 0 <= t.offset and t.offset + t.nbytes <= len(raw)
        _outcome(inspect_path, path)


def test_gguf_base_is_read_correctly(gguf_base, tmp_path):
    path = tmp_path / "base.gguf"
    path.write_bytes(gguf_base[0])
    tensors, meta = read_gguf_header(path)
    assert [(t.name, t.shape, t.dtype) for t in tensors] == [
        ("double_blocks.0.img_attn.qkv.weight", (4, 32), "F32"),
        ("double_blocks.0.img_attn.norm.query_norm.scale", (32,), "F16"),
        ("final_layer.linear.weight", (2, 64), "Q8_0")]
    assert meta["tokenizer.ggml.tokens"] == ["a", "bb", "ccc"] and meta["fuzz.count"] == 7


# ---- diffusers folders ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sd15_unet(tmp_path_factory):
    """A real-layout SD1.5 UNet header (sparse: no data) to put in the fuzzed folders."""
    from checkpoints import meta_state_dict, write_sparse

    path = tmp_path_factory.mktemp("unet") / "diffusion_pytorch_model.safetensors"
    write_sparse(path, meta_state_dict("sd15", "unet"), "F16")
    return str(path)


BASE_INDEX = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.35.0",
              "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
              "scheduler": ["diffusers", "PNDMScheduler"]}


def _folder(d: str, unet: str, index_bytes: bytes) -> str:
    os.makedirs(os.path.join(d, "unet"))
    os.symlink(unet, os.path.join(d, "unet", "diffusion_pytorch_model.safetensors"))
    os.makedirs(os.path.join(d, "vae"))
    with open(os.path.join(d, "model_index.json"), "wb") as f:
        f.write(index_bytes)
    return d


@settings(FUZZ, max_examples=60)
@given(edits=st.lists(st.tuples(st.sampled_from(sorted(BASE_INDEX) + ["text_encoder", "x"]), json_values), max_size=3),
       whole=st.none() | json_values)
def test_model_index_values(sd15_unet, edits, whole):
    index = dict(BASE_INDEX)
    for key, value in edits:
        index[key] = value
    with tempfile.TemporaryDirectory() as d:
        folder = _folder(d, sd15_unet, json.dumps(index if whole is None else whole).encode())
        rep = _outcome(inspect_path, folder)
        if rep is not None:  # accepted: the answer is the UNet that is there
            assert rep.architecture in ("sd15", "sd21") and rep.format == "diffusers"
            assert "unet" in [c.name for c in rep.components]


@settings(FUZZ, max_examples=50)
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4),
       cut=st.none() | st.floats(0, 1), nest=st.integers(0, 3000))
def test_model_index_bytes(sd15_unet, flips, cut, nest):
    raw = bytearray(json.dumps(BASE_INDEX).encode())
    _flip(raw, flips)
    raw = _cut(raw, cut)
    if nest:
        raw = raw.replace(b'"_diffusers_version": ', b'"_diffusers_version": ' + b"[" * nest, 1) + b"]" * nest
    with tempfile.TemporaryDirectory() as d:
        rep = _outcome(inspect_path, _folder(d, sd15_unet, bytes(raw)))
        if rep is not None:
            assert rep.architecture in ("sd15", "sd21")


@settings(FUZZ, max_examples=50)
@given(config=json_values | st.dictionaries(st.sampled_from(["_class_name", "block_out_channels", "cross_attention_dim",
                                                             "layers_per_block", "in_channels"]), json_values, max_size=4))
@example(config={"_class_name": "\n"})  # found by this test in CI: the class name went into the message as it was
@example(config={"_class_name": "ControlNet\nModel"})
def test_controlnet_config_values(config):
    from lowvram.catalogue import MODELS
    from lowvram.catalogue.controlnet import folder_controlnet

    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config, f)
        spec = _outcome(folder_controlnet, MODELS["sd15"], d)
        if spec is not None:
            assert config.get("_class_name") == "ControlNetModel"

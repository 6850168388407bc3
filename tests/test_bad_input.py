"""Issue #9 (file formats, hub, outputs): each class of crafted or damaged input ends in one sentence.

A few examples drive the CLI for real (exit status 2, one line on stderr, no traceback, nothing on
stdout); the rest call the functions in-process, where only a UserError may escape.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile

import gguf
import numpy as np
import pytest
import torch

from lowvram.checkpoints.inspect import inspect_path, load_pickle_state_dict, read_tensors
from lowvram.checkpoints.safetensors_header import read_safetensors_header
from lowvram.errors import UserError
from lowvram.generate.output import write_pngs
from lowvram.hub_http import check_endpoint
from lowvram.jsonfile import read_json

pytestmark = pytest.mark.timeout(180)

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _cli(*args, env=None, timeout=120):
    env = dict(env or os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "lowvram.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def _one_sentence(r, *words):
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line and not line.startswith("chose ")]
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def _safetensors(path, header: dict | bytes, data: bytes = b"") -> str:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + data)
    return str(path)


def _tiny_gguf(path) -> str:
    w = gguf.GGUFWriter(str(path), "flux", use_temp_file=False)
    w.add_array("tokenizer.ggml.scores", [0.5, 0.25, 0.125])
    w.add_tensor("double_blocks.0.img_attn.qkv.weight", np.zeros((4, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


# ---- declared sizes trusted before they are checked against the file -------------------------------------

def test_gguf_array_count_past_the_file_is_refused_at_once(tmp_path):
    data = bytearray(open(_tiny_gguf(tmp_path / "ok.gguf"), "rb").read())
    key = b"tokenizer.ggml.scores"
    at = data.index(key) + len(key) + 4 + 4  # key, value type ARRAY, item type: the item count follows
    assert struct.unpack_from("<Q", data, at)[0] == 3
    struct.pack_into("<Q", data, at, 2**61)
    bad = tmp_path / "huge-array.gguf"
    bad.write_bytes(bytes(data))
    start = time.monotonic()
    _one_sentence(_cli("inspect", str(bad)), "huge-array.gguf", "tokenizer.ggml.scores")
    _one_sentence(_cli("plan", str(bad), "--gpu", "RTX 4060"), "huge-array.gguf")
    assert time.monotonic() - start < 120


def test_zip_checkpoint_whose_member_inflates_is_refused_before_reading(tmp_path):
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb/data.pkl", b"\0" * (64 * 2**20))  # 64 MiB of zeros deflate to ~64 kB
    assert bomb.stat().st_size < 2**20
    _one_sentence(_cli("inspect", str(bomb)), "bomb.pt", "declares")


# ---- JSON that parses into the unexpected --------------------------------------------------------------

def test_safetensors_header_deeply_nested_or_with_a_huge_integer(tmp_path):
    deep = _safetensors(tmp_path / "deep.safetensors", b"[" * 100_000 + b"]" * 100_000)
    _one_sentence(_cli("inspect", deep), "deep.safetensors")
    big = _safetensors(tmp_path / "big.safetensors",
                       b'{"w": {"dtype": "F16", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 2]}}')
    with pytest.raises(UserError, match="big.safetensors"):
        read_safetensors_header(big)
    nested = _safetensors(tmp_path / "nested.safetensors", b'{"w": ' + b'{"a": ' * 200 + b"1" + b"}" * 201)
    with pytest.raises(UserError, match="deeper than"):
        read_safetensors_header(nested)


@pytest.mark.parametrize("index, words", [
    ([1, 2], "array where a JSON object belongs"),
    ({"_class_name": ["FluxPipeline"], "transformer": ["diffusers", "FluxTransformer2DModel"]}, "_class_name"),
    ({"_class_name": "FluxPipeline", "transformer": []}, "without a readable diffusion model"),
    ({"_class_name": "FluxPipeline", "transformer": [None]}, "without a readable diffusion model"),
])
def test_model_index_of_the_wrong_shape(tmp_path, index, words):
    (tmp_path / "transformer").mkdir()
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match=words.replace("(", r"\(")):
        inspect_path(str(tmp_path))


def test_model_index_of_the_wrong_type_through_the_cli(tmp_path):
    (tmp_path / "model_index.json").write_text('"FluxPipeline"')
    _one_sentence(_cli("inspect", str(tmp_path)), "model_index.json", "a string where a JSON object belongs")


def test_controlnet_config_of_the_wrong_type(tmp_path):
    from lowvram.catalogue import MODELS
    from lowvram.catalogue.controlnet import folder_controlnet

    (tmp_path / "config.json").write_text("[]")
    with pytest.raises(UserError, match="config.json"):
        folder_controlnet(MODELS["sdxl"], str(tmp_path))
    (tmp_path / "config.json").write_text('{"_class_name": {"x": 1}}')
    with pytest.raises(UserError, match="not a ControlNet"):
        folder_controlnet(MODELS["sdxl"], str(tmp_path))


@pytest.mark.parametrize("ranges, words", [
    ([(0, 8), (0, 8)], "overlaps"),  # duplicate range
    ([(0, 8), (4, 12)], "overlaps"),
    ([(0, 8), (16, 24)], "gap"),
    ([(8, 16), (16, 24)], "gap"),
])
def test_safetensors_ranges_must_tile_the_data(tmp_path, ranges, words):
    header = {f"t{i}": {"dtype": "F32", "shape": [(b - a) // 4], "data_offsets": [a, b]} for i, (a, b) in enumerate(ranges)}
    path = _safetensors(tmp_path / "x.safetensors", header, b"\0" * max(b for _, b in ranges))
    with pytest.raises(UserError, match=words):
        read_safetensors_header(path)


def test_safetensors_duplicate_key_and_trailing_bytes(tmp_path):
    raw = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    with pytest.raises(UserError, match="appears twice"):
        read_safetensors_header(_safetensors(tmp_path / "dup.safetensors", raw, b"\0" * 4))
    trailing = _safetensors(tmp_path / "trail.safetensors", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 12)
    with pytest.raises(UserError, match="cover 4 of the 12"):
        read_safetensors_header(trailing)
    ok = _safetensors(tmp_path / "ok.safetensors", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                                                    "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}}, b"\0" * 4)
    assert [t.name for t in read_safetensors_header(ok)[0]] == ["a", "e"]


# ---- files that are not regular files ------------------------------------------------------------------

def test_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    _one_sentence(_cli("inspect", str(fifo), timeout=60), "FIFO")
    for name in ("model.gguf", "model.pt"):
        os.mkfifo(tmp_path / name)
        with pytest.raises(UserError, match="FIFO"):
            read_tensors(str(tmp_path / name))
    folder = tmp_path / "pipe"
    folder.mkdir()
    os.mkfifo(folder / "model_index.json")
    with pytest.raises(UserError, match="FIFO"):
        read_json(folder / "model_index.json", "a diffusers model_index.json")


# ---- output paths ---------------------------------------------------------------------------------------

def _img():
    return np.full((8, 8, 3), 0.5)


def test_output_never_follows_a_planted_link(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.png"
    os.symlink(victim, out / "a.png.part")  # the old, predictable temporary name
    os.symlink(victim, out / ".a.png.part")
    assert write_pngs([_img()], str(out / "a.png"), "p", "", {"Steps": 1}) == [str(out / "a.png")]
    assert not victim.exists() and not os.path.islink(out / "a.png")
    link = out / "b.png"
    os.symlink(victim, link)  # a link at the final name is replaced, not written through
    write_pngs([_img()], str(link), "p", "", {})
    assert not victim.exists() and not os.path.islink(link)
    assert sorted(os.listdir(out)) == [".a.png.part", "a.png", "a.png.part", "b.png"]


def test_a_batch_is_all_or_nothing(tmp_path, monkeypatch):
    from PIL import Image

    (tmp_path / "c-1.png").mkdir()  # the second image's name is taken by a folder
    with pytest.raises(UserError, match="folder"):
        write_pngs([_img(), _img()], str(tmp_path / "c.png"), "p", "", {})
    assert sorted(os.listdir(tmp_path)) == ["c-1.png"]
    calls = []
    real_save = Image.Image.save

    def failing_save(self, fp, *a, **k):
        calls.append(fp)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(UserError, match="No space left"):
        write_pngs([_img(), _img(), _img()], str(tmp_path / "d.png"), "p", "", {})
    assert sorted(os.listdir(tmp_path)) == ["c-1.png"]  # no image, no temporary


# ---- the hub --------------------------------------------------------------------------------------------

@pytest.fixture()
def silent_server():
    """Accepts connections on loopback and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.2)
    held, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join(5)
    for c in held:
        c.close()
    srv.close()


def test_pull_from_a_silent_hub_fails_within_30_s(silent_server, tmp_path):
    env = dict(os.environ, HF_ENDPOINT=silent_server, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_TELEMETRY="1")
    for k in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        env.pop(k, None)
    start = time.monotonic()
    r = _cli("pull", "flux-schnell", env=env, timeout=150)
    elapsed = time.monotonic() - start
    _one_sentence(r, "black-forest-labs/FLUX.1-schnell")
    assert elapsed < 30 + 30, elapsed  # 30 s for the hub, the rest for starting Python on a busy machine


@pytest.mark.parametrize("endpoint", ["huggingface.co", "ftp://mirror.example", "http://", "https://host:99999", "http://[::1"])
def test_malformed_hf_endpoint(endpoint):
    with pytest.raises(UserError, match="HF_ENDPOINT"):
        check_endpoint(endpoint)


def test_malformed_hf_endpoint_through_the_cli(tmp_path):
    env = dict(os.environ, HF_ENDPOINT="htp:/typo", HF_HOME=str(tmp_path / "hf"))
    _one_sentence(_cli("pull", "flux-schnell", env=env), "HF_ENDPOINT")


def test_good_endpoints_pass():
    for endpoint in (None, "https://huggingface.co", "http://127.0.0.1:8080/mirror/"):
        check_endpoint(endpoint)


# ---- a safe legacy (non-zip) checkpoint of plain tensors -------------------------------------------------

def test_legacy_non_zip_checkpoint_of_plain_tensors_loads(tmp_path):
    sd = {"model.diffusion_model.conv_in.weight": torch.randn(4, 4), "step": torch.tensor(3)}
    old = tmp_path / "old.ckpt"
    torch.save({"state_dict": sd}, old, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(old)
    got = load_pickle_state_dict(str(old), "cpu")
    assert set(got) == set(sd) and torch.equal(got["model.diffusion_model.conv_in.weight"], sd["model.diffusion_model.conv_in.weight"])
    infos, _ = read_tensors(str(old))
    assert {t.name: t.shape for t in infos} == {k: tuple(v.shape) for k, v in sd.items()}


def test_legacy_checkpoint_that_needs_code_is_still_refused(tmp_path):
    import argparse

    bad = tmp_path / "code.pt"  # any object beyond tensors and plain containers needs code to rebuild
    torch.save({"x": argparse.Namespace(a=1)}, bad, _use_new_zipfile_serialization=False)
    with pytest.raises(UserError, match="safe PyTorch checkpoint"):
        load_pickle_state_dict(str(bad), "meta")

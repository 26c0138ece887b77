"""Fuzzing every reader (issue 13): random bytes and mutations of valid files go in, only
convscope's own errors come out (ModelFileError, DataError, ArchitectureError, ShapeError),
never another exception, within bounded memory.

The memory bound: while the fuzzing runs the process's address space is capped at what it
uses now plus MARGIN (a soft RLIMIT_AS, restored afterwards), so a reader that allocates what a
file claims fails here with a MemoryError, which is not one of convscope's errors.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import resource
import struct
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convscope.data.formats import (parse_cifar_binary, parse_cifar_python, parse_idx,
                                    read_cifar_archive, read_idx)
from convscope.data.images import load_image
from convscope.errors import ArchitectureError, DataError, ModelFileError, ShapeError
from convscope.formats.architecture import build_model, load_architecture
from convscope.formats.model_file import load_model, save_model
from convscope.formats.safetensors import read_safetensors
from convscope.layers.registry import REGISTRY

OURS = (ModelFileError, DataError, ArchitectureError, ShapeError)
MARGIN = 768 * 2 ** 20
FUZZ = settings(max_examples=int(os.environ.get("CONVSCOPE_FUZZ_EXAMPLES", "120")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


@pytest.fixture(autouse=True)
def bounded_memory() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _address_space() + MARGIN
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def only_ours(call: Callable[[], Any]) -> None:
    """Run ``call``: success, or one of convscope's errors with a one-line message."""
    try:
        call()
    except OURS as exc:
        assert str(exc) and "\n" not in str(exc).strip(), repr(exc)


def mutate(data: bytes, draw: Any) -> bytes:
    """Flip, overwrite, insert, delete or truncate bytes of ``data``."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "digits"]))
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            b[i] = draw(st.integers(0, 255))
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del b[i:i + draw(st.integers(1, 16))]
        elif op == "truncate":
            del b[i:]
        else:  # a big number where a small one was: what a lying header does
            b[i:i] = draw(st.sampled_from([b"9" * 12, b"-1", b"1e308", b"4294967295"]))
    return bytes(b)


@st.composite
def mutated(draw: Any, data: bytes) -> bytes:
    return mutate(data, draw)


# ---------------------------------------------------------------------------------------------
# model files


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    arch = [{"type": "conv", "filters": 2, "size": 3}, {"type": "batchnorm"}, {"type": "relu"},
            {"type": "maxpool", "size": 2}, {"type": "fc", "units": "classes"}]
    p = tmp_path_factory.mktemp("m") / "m.safetensors"
    save_model(p, build_model(arch, (1, 8, 8), 3, seed=0), ["a", "b", "c"])
    return p.read_bytes()


@FUZZ
@given(data=st.data())
def test_model_files(tmp_path: Path, model_bytes: bytes, data: Any) -> None:
    raw = data.draw(st.one_of(mutated(model_bytes), st.binary(max_size=400),
                              st.builds(lambda n, rest: struct.pack("<Q", n) + rest,
                                        st.integers(0, 2 ** 64 - 1), st.binary(max_size=64))))
    p = tmp_path / "m.safetensors"
    p.write_bytes(raw)
    only_ours(lambda: read_safetensors(p))
    only_ours(lambda: load_model(p))


def _header_json(model_bytes: bytes) -> dict:
    (n,) = struct.unpack("<Q", model_bytes[:8])
    return json.loads(model_bytes[8:8 + n])


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
                    | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)


@FUZZ
@given(data=st.data())
def test_model_file_metadata(tmp_path: Path, model_bytes: bytes, data: Any) -> None:
    """The header's JSON values replaced by others: shapes, offsets, dtypes, the metadata."""
    header = _header_json(model_bytes)
    (n,) = struct.unpack("<Q", model_bytes[:8])
    body = model_bytes[8 + n:]
    meta = json.loads(header["__metadata__"]["convscope"])
    target = data.draw(st.sampled_from(["tensor", "meta", "arch"]))
    if target == "tensor":
        name = data.draw(st.sampled_from([k for k in header if k != "__metadata__"]))
        key = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        header[name][key] = data.draw(JSON)
    elif target == "meta":
        meta[data.draw(st.sampled_from(["classes", "input_shape", "dtype", "normalization",
                                        "architecture", "background"]))] = data.draw(JSON)
    else:
        layer = data.draw(st.integers(0, len(meta["architecture"]) - 1))
        meta["architecture"][layer][data.draw(st.text(max_size=8) | st.sampled_from(
            ["filters", "size", "stride", "pad", "units", "type", "layers"]))] = data.draw(JSON)
    header["__metadata__"]["convscope"] = json.dumps(meta)
    text = json.dumps(header).encode()
    p = tmp_path / "m.safetensors"
    p.write_bytes(struct.pack("<Q", len(text)) + text + body)
    only_ours(lambda: load_model(p))


# ---------------------------------------------------------------------------------------------
# IDX and CIFAR


def _idx(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i2"): 0x0B, np.dtype(">f4"): 0x0D}[arr.dtype]
    return (b"\0\0" + bytes([code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
            + arr.tobytes())


VALID_IDX = [_idx(np.arange(60, dtype=np.uint8).reshape(3, 4, 5)),
             _idx(np.arange(12, dtype=">i2").reshape(12)),
             _idx(np.linspace(0, 1, 8).astype(">f4").reshape(2, 4))]


@FUZZ
@given(data=st.data())
def test_idx_files(tmp_path: Path, data: Any) -> None:
    valid = data.draw(st.sampled_from(VALID_IDX))
    raw = data.draw(st.one_of(mutated(valid), st.binary(max_size=200)))
    compress = data.draw(st.sampled_from(["no", "gzip", "mutated gzip"]))
    if compress != "no":
        raw = gzip.compress(raw)
        if compress == "mutated gzip":
            raw = mutate(raw, data.draw)
    p = tmp_path / "f.idx.gz"
    p.write_bytes(raw)
    only_ours(lambda: read_idx(p))
    only_ours(lambda: parse_idx(raw))


def _cifar_python(n: int) -> bytes:
    import pickle
    return pickle.dumps({b"data": np.zeros((n, 3072), np.uint8), b"labels": list(range(n))},
                        protocol=2)


@FUZZ
@given(data=st.data())
def test_cifar_batches(data: Any) -> None:
    binary = bytes(3073) * 2
    raw = data.draw(st.one_of(mutated(binary), mutated(_cifar_python(2)), st.binary(max_size=300)))
    only_ours(lambda: parse_cifar_binary(raw))
    only_ours(lambda: parse_cifar_python(raw))


@FUZZ
@given(data=st.data())
def test_cifar_archives(tmp_path: Path, data: Any) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            blob = bytes(3073)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    p = tmp_path / "cifar.tar.gz"
    p.write_bytes(data.draw(st.one_of(mutated(buf.getvalue()), st.binary(max_size=300))))
    only_ours(lambda: read_cifar_archive(p))


# ---------------------------------------------------------------------------------------------
# architecture JSON

VALID_ARCH = [{"type": "conv", "filters": 4, "size": 3, "pad": 1, "activation": "relu"},
              {"type": "sequential", "layers": [{"type": "batchnorm"}, {"type": "dropout"}]},
              {"type": "maxpool", "size": 2}, {"type": "fc", "units": "classes"}]
KEYS = sorted({k for kind in REGISTRY.values() for k in kind.cls.spec_keys} | {"type"})
VALUES = (st.integers(-3, 12) | st.sampled_from([0, 2 ** 31, 10 ** 12, "same", "valid", "classes",
                                                 [1, 2], [[1, 0], [0, 1]], None, True, 1.5])
          | JSON)


@st.composite
def layer_specs(draw: Any) -> dict:
    spec = {"type": draw(st.sampled_from(sorted(REGISTRY) + ["input", "softmax", "pool", "x"]))}
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=4)):
        spec[key] = draw(VALUES)
    if spec["type"] in ("sequential", "residual", "concat") and draw(st.booleans()):
        spec["layers"] = draw(st.lists(layer_specs(), max_size=3))  # type: ignore[call-arg]
    return spec


@FUZZ
@given(layers=st.one_of(st.lists(layer_specs(), max_size=6), JSON),
       shape=st.tuples(st.integers(1, 4), st.integers(1, 40), st.integers(1, 40)),
       classes=st.integers(1, 5))
def test_architectures(tmp_path: Path, layers: Any, shape: tuple, classes: int) -> None:
    p = tmp_path / "a.json"
    p.write_text(json.dumps(layers))
    only_ours(lambda: build_model(str(p), shape, classes, seed=0, allocate=False))
    only_ours(lambda: build_model(str(p), shape, classes, seed=0))


@FUZZ
@given(data=st.data())
def test_architecture_files(tmp_path: Path, data: Any) -> None:
    raw = data.draw(st.one_of(mutated(json.dumps(VALID_ARCH).encode()),
                              st.binary(max_size=200)))
    p = tmp_path / "a.json"
    p.write_bytes(raw)
    only_ours(lambda: load_architecture(p))
    only_ours(lambda: build_model(str(p), (3, 16, 16), 3, seed=0))


# ---------------------------------------------------------------------------------------------
# images


def _images() -> list[bytes]:
    from PIL import Image
    rng = np.random.default_rng(0)
    out = []
    for fmt, mode in (("PNG", "L"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("GIF", "P"),
                      ("BMP", "RGB"), ("TIFF", "I;16"), ("WEBP", "RGB")):
        arr = rng.integers(0, 255, (12, 10, 3), np.uint8)
        img = Image.fromarray(arr).convert(mode if mode != "I;16" else "L")
        if mode == "I;16":
            img = Image.fromarray(arr[..., 0].astype(np.uint16) * 200)
        buf = io.BytesIO()
        try:
            img.save(buf, fmt)
        except (OSError, KeyError):  # a codec this Pillow lacks
            continue
        out.append(buf.getvalue())
    return out


IMAGES = _images()


@FUZZ
@given(data=st.data())
def test_images(tmp_path: Path, data: Any) -> None:
    raw = data.draw(st.one_of(mutated(data.draw(st.sampled_from(IMAGES))),
                              st.binary(max_size=200)))
    p = tmp_path / "i.img"
    p.write_bytes(raw)
    shape = data.draw(st.sampled_from([(1, 28, 28), (3, 32, 32), (4, 5, 7)]))
    fit = data.draw(st.sampled_from(["stretch", "crop", "pad"]))
    only_ours(lambda: load_image(p, shape, fit))

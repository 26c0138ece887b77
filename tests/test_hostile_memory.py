"""Hostile files cannot make convscope take the machine (issue 13, part 1).

Each file is built here, in the test, and the command runs in a subprocess under an address-space
limit (RLIMIT_AS, a safety net: a regression fails with a MemoryError instead of swapping the
machine away).  What is asserted comes from that one child's own rusage (``os.wait4``): peak
resident memory under 300 MB and CPU time under 2 s (CPU, not wall-clock time: this machine is
shared), one line on stderr, a non-zero exit status; where the command should succeed without
allocating (``summary`` and ``explain`` of a huge JSON architecture, ``shapes`` with a huge
filter) it does, within the same bounds.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import convscope as cs
from convscope import limits
from convscope.errors import DataError
from convscope.formats.architecture import build_model
from convscope.formats.model_file import read_metadata, save_model

PEAK_MB = 300
CPU_S = 2.0
AS_LIMIT = 3 * 2 ** 30  # the safety net; NumPy, OpenBLAS and the imports need ~1 GB of it
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Ran:
    rc: int
    stdout: str
    stderr: str
    peak_mb: float
    cpu_s: float
    wall_s: float


#: A small launcher between pytest and the command: a child forked from pytest itself would
#: report pytest's own resident memory as its peak (the pages it shares until exec).  It sets
#: the address-space limit, runs the command and writes the command's own rusage.
_LAUNCH = """
import json, os, resource, subprocess, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
p = subprocess.Popen(sys.argv[3:])
_, status, ru = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump([os.waitstatus_to_exitcode(status), ru.ru_maxrss, ru.ru_utime + ru.ru_stime], f)
"""


def run_cli(*args: str, cwd: Path) -> Ran:
    """``python -m convscope ARGS`` limited to AS_LIMIT of address space; its own peak RSS and
    CPU time (wait4 in the launcher)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    for lim in limits.LIMITS.values():
        env.pop(lim.env, None)
    with tempfile.TemporaryDirectory() as tmp:
        usage = Path(tmp) / "usage.json"
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _LAUNCH, str(usage), str(AS_LIMIT),
                               sys.executable, "-m", "convscope", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, errors="replace", timeout=300)
        wall = time.perf_counter() - t0
        rc, maxrss, cpu = json.loads(usage.read_text())
        assert done.returncode == 0, done.stderr  # the launcher itself
        return Ran(rc, done.stdout, done.stderr, maxrss / 1024, cpu, wall)


def assert_refused(r: Ran, *words: str) -> str:
    """Refused: non-zero, one line on stderr naming ``words``, within the memory and CPU bounds."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.rc != 0, r
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr
    assert "internal error" not in lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    assert_bounded(r)
    return lines[0]


def assert_bounded(r: Ran) -> None:
    assert r.peak_mb < PEAK_MB, f"peak {r.peak_mb:.0f} MB: {r.stderr}"
    assert r.cpu_s < CPU_S, f"{r.cpu_s:.2f} s of CPU: {r.stderr}"


# ---------------------------------------------------------------------------------------------
# building the files


def _safetensors(path: Path, tensors: dict[str, np.ndarray], meta: dict | str,
                 fmt: str = "convscope.model") -> Path:
    """A safetensors file written by hand (so that its metadata can lie)."""
    header: dict = {"__metadata__": {"format": fmt, "format_version": "2",
                                     "convscope": meta if isinstance(meta, str)
                                     else json.dumps(meta)}}
    offset, blobs = 0, []
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr, "<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


def _png(path: Path, width: int, height: int, depth: int = 16) -> Path:
    """A grey PNG of width x height (all zeros), compressed row by row: a few hundred KB for
    13000 x 13000 at 16 bits, hundreds of MB once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    row = b"\0" * (1 + width * depth // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def _small_png(path: Path) -> Path:
    from PIL import Image
    Image.fromarray(np.full((200, 200), 128, np.uint8)).save(path)
    return path


def _tiny_model(path: Path) -> Path:
    arch = [{"type": "conv", "filters": 6, "size": 5}, {"type": "relu"}, {"type": "gap"},
            {"type": "fc", "units": "classes"}]
    model = build_model(arch, (1, 28, 28), 10, seed=0)
    return save_model(path, model, [str(i) for i in range(10)])


def _over_the_limits(arch: list, shape: tuple[int, int, int], path: Path) -> Path:
    """A model file of ``arch`` on ``shape``, built here with the limits raised."""
    for name in ("max_activation_bytes", "max_pixels"):
        limits.set_limit(name, 2 ** 62)
    try:
        return save_model(path, build_model(arch, shape, 2, seed=0), ["a", "b"])
    finally:
        limits.reset_limits()


# ---------------------------------------------------------------------------------------------
# model files


def test_weights_are_checked_against_the_metadata_before_building(tmp_path: Path) -> None:
    """A 250 KB-class file whose metadata claims a conv of 2,000,000 filters (9.6 GB once
    built): refused by comparing shapes, before any weight exists."""
    good = _tiny_model(tmp_path / "good.safetensors")
    tensors, meta = cs.formats.safetensors.read_safetensors(good)
    meta["architecture"][0]["filters"] = 2_000_000
    bad = _safetensors(tmp_path / "liar.safetensors", tensors, meta)
    img = _small_png(tmp_path / "a.png")
    for cmd in (("predict", str(bad), str(img)), ("summary", str(bad)), ("explain", str(bad))):
        assert_refused(run_cli(*cmd, cwd=tmp_path), "weights do not match", "2000000")


def test_a_model_claiming_a_huge_input_is_refused_before_predict_allocates(tmp_path: Path
                                                                           ) -> None:
    """A valid 1 KB model (conv, gap, fc: no parameter depends on the input size) whose
    metadata says 1x12000x12000: refused at load, naming the limit and its override."""
    arch = [{"type": "conv", "filters": 6, "size": 5}, {"type": "gap"}, {"type": "fc",
                                                                          "units": "classes"}]
    path = _over_the_limits(arch, (1, 12000, 12000), tmp_path / "huge-input.safetensors")
    assert path.stat().st_size < 4000
    img = _small_png(tmp_path / "a.png")
    line = assert_refused(run_cli("predict", str(path), str(img), cwd=tmp_path),
                          "1x12000x12000", "max_pixels", "--max-pixels", "CONVSCOPE_MAX_PIXELS")
    assert "144,000,000" in line


def test_a_model_over_the_activation_limit_is_refused(tmp_path: Path) -> None:
    arch = [{"type": "conv", "filters": 64, "size": 3}, {"type": "gap"},
            {"type": "fc", "units": "classes"}]
    path = _over_the_limits(arch, (3, 2000, 2000), tmp_path / "wide.safetensors")
    assert_refused(run_cli("predict", str(path), str(_small_png(tmp_path / "a.png")),
                           cwd=tmp_path),
                   "activations per image", "max_activation_bytes", "--max-activation-bytes")


def test_corrupt_safetensors_claims(tmp_path: Path) -> None:
    """Header lengths and tensor shapes that claim terabytes: refused from the header."""
    p = tmp_path / "m.safetensors"
    p.write_bytes(struct.pack("<Q", 2 ** 40) + b"{}")
    assert_refused(run_cli("summary", str(p), cwd=tmp_path), "corrupt header")
    meta = json.dumps({"format": "convscope.model", "format_version": "2", "convscope": "{}"})
    header = json.dumps({"__metadata__": json.loads(meta),
                         "0.weight": {"dtype": "F32", "shape": [2 ** 31, 2 ** 31],
                                      "data_offsets": [0, 2 ** 64]}}).encode()
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    assert_refused(run_cli("summary", str(p), cwd=tmp_path), "truncated")
    header = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    p.write_bytes(struct.pack("<Q", len(header)) + header)
    assert_refused(run_cli("summary", str(p), cwd=tmp_path), "corrupt header")


def test_a_header_over_max_json_bytes(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    header = json.dumps({"__metadata__": {"pad": " " * (5 * 2 ** 20)}}).encode()
    p.write_bytes(struct.pack("<Q", len(header)) + header)
    assert_refused(run_cli("summary", str(p), cwd=tmp_path), "max_json_bytes",
                   "--max-json-bytes")


# ---------------------------------------------------------------------------------------------
# JSON architectures


def _write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


BIG = [{"type": "conv", "filters": 2_000_000, "size": 5}, {"type": "relu"},
       {"type": "fc", "units": 10}]


def test_summary_and_explain_of_a_huge_architecture_allocate_no_weight(tmp_path: Path) -> None:
    """2,000,000 filters: 15.8 G parameters (59 GiB) counted from the spec, in megabytes."""
    arch = _write(tmp_path / "big.json", BIG)
    r = run_cli("summary", str(arch), "--input-shape", "3x32x32", cwd=tmp_path)
    assert r.rc == 0, r.stderr
    assert "total: 15,832,000,010 parameters" in r.stdout
    assert_bounded(r)
    r = run_cli("explain", str(arch), "--input", "32x32x3", cwd=tmp_path)
    assert r.rc == 0, r.stderr
    assert "weights 5·5·3·2000000 = 150000000" in r.stdout
    assert "total: 15,832,000,010 parameters" in r.stdout
    assert_bounded(r)


def test_training_a_huge_architecture_is_refused_before_it_is_built(tmp_path: Path) -> None:
    arch = _write(tmp_path / "big.json", BIG[:1] + [{"type": "gap"}, {"type": "fc",
                                                                         "units": "classes"}])
    line = assert_refused(run_cli("train", "--arch", str(arch), "--epochs", "1", "--out",
                                  str(tmp_path / "run"), cwd=tmp_path),
                          "max_params", "--max-params", "CONVSCOPE_MAX_PARAMS")
    assert "50,000,000" in line and "72,000,010" in line  # 5·5·1·2M + 2M + fc 2M·10 + 10


def test_architecture_files_deeply_nested_or_too_large(tmp_path: Path) -> None:
    arch = tmp_path / "deep.json"  # 3000 blocks inside blocks (json.dumps itself cannot)
    arch.write_text("[" + '{"type": "sequential", "layers": [' * 3000 + '{"type": "relu"}'
                    + "]}" * 3000 + "]")
    assert_refused(run_cli("summary", str(arch), "--input-shape", "1x8x8", cwd=tmp_path),
                   "nested too deeply")
    arch = tmp_path / "huge.json"
    arch.write_text("[" + " " * (5 * 2 ** 20) + "]")
    assert_refused(run_cli("summary", str(arch), "--input-shape", "1x8x8", cwd=tmp_path),
                   "max_json_bytes")


# ---------------------------------------------------------------------------------------------
# data files


def _idx_header(dims: tuple[int, ...]) -> bytes:
    return b"\0\0\x08" + bytes([len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def _mnist_dir(tmp_path: Path, first: bytes) -> Path:
    d = tmp_path / "data" / "mnist"
    d.mkdir(parents=True)
    (d / "train-images-idx3-ubyte.gz").write_bytes(first)
    for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (d / name).write_bytes(gzip.compress(_idx_header((1,)) + b"\0"))
    return tmp_path / "data"


def test_a_gzip_bomb_idx_is_read_no_further_than_its_header_says(tmp_path: Path) -> None:
    """An IDX header declaring 10 images of 28x28 over a gzip stream of 1 GiB of zeros
    (about 1 MB on disk): the stream is inflated to the declared 7,840 bytes and one more."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    parts = [z.compress(_idx_header((10, 28, 28)))]
    block = b"\0" * 2 ** 20
    parts += [z.compress(block) for _ in range(1024)]
    bomb = b"".join(parts) + z.flush()
    assert len(bomb) < 2 * 2 ** 20
    data = _mnist_dir(tmp_path, bomb)
    assert_refused(run_cli("train", "--data", "mnist", "--data-dir", str(data), "--no-download",
                           "--out", str(tmp_path / "run"), cwd=tmp_path),
                   "too long IDX data", "7840")


def test_an_idx_header_declaring_gigabytes_is_refused_before_reading(tmp_path: Path) -> None:
    data = _mnist_dir(tmp_path, gzip.compress(_idx_header((60000, 3000, 3000))))
    assert_refused(run_cli("train", "--data", "mnist", "--data-dir", str(data), "--no-download",
                           "--out", str(tmp_path / "run"), cwd=tmp_path),
                   "max_decoded_bytes", "--max-decoded-bytes", "(60000, 3000, 3000)")
    # under the limit, but more than a 33-byte gzip file can hold
    (data / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(_idx_header((1000, 300, 300))))
    assert_refused(run_cli("train", "--data", "mnist", "--data-dir", str(data), "--no-download",
                           "--out", str(tmp_path / "run"), cwd=tmp_path),
                   "corrupt IDX header", "90,000,000 bytes", "1032:1")


# ---------------------------------------------------------------------------------------------
# images


def test_a_decompression_bomb_png_is_one_line(tmp_path: Path) -> None:
    """A 16-bit 13000 x 13000 PNG, some 300 KB: refused from its header (Pillow's warning never
    reaches the terminal)."""
    bomb = _png(tmp_path / "bomb.png", 13000, 13000)
    assert bomb.stat().st_size < 1_000_000
    model = _tiny_model(tmp_path / "m.safetensors")
    line = assert_refused(run_cli("predict", str(model), str(bomb), cwd=tmp_path),
                          "bomb.png", "169,000,000", "max_pixels", "--max-pixels")
    assert "13000×13000" in line
    # between the limit and twice it (where Pillow only warns): the same one line
    mid = _png(tmp_path / "mid.png", 8000, 8000, depth=8)
    assert_refused(run_cli("predict", str(model), str(mid), cwd=tmp_path), "64,000,000",
                   "max_pixels")


def test_a_large_jpeg_is_decoded_at_reduced_size(tmp_path: Path) -> None:
    from PIL import Image
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (6000, 7000), np.uint8)).save(photo, quality=30)
    model = _tiny_model(tmp_path / "m.safetensors")
    r = run_cli("predict", str(model), str(photo), cwd=tmp_path)
    assert r.rc == 0, r.stderr
    assert r.peak_mb < 150  # 42 MB decoded in full; 1/8 scale is 0.7 MB


# ---------------------------------------------------------------------------------------------
# shapes, and the image folder's default size


def test_shapes_with_a_huge_filter_is_bounded(tmp_path: Path) -> None:
    r = run_cli("shapes", "--input", "100000", "--filter", "50000", cwd=tmp_path)
    assert r.rc == 0, r.stderr
    lines = r.stdout.splitlines()
    cap = limits.LIMITS["max_lines"].default
    assert len(lines) == 1 + cap + 1 + 1
    assert lines[1].startswith("stride 1: ") and lines[cap].startswith(f"stride {cap}: ")
    assert f"strides {cap + 1} to 50000 left out (49,968 lines" in lines[cap + 1]
    assert "--max-lines" in lines[cap + 1]
    assert_bounded(r)
    r = run_cli("shapes", "--input", "100000", "--filter", "50000", "--strict", cwd=tmp_path)
    assert r.rc == 1 and "does not fit" in r.stderr


def test_an_image_folder_of_large_photos_gets_a_smaller_default_size(tmp_path: Path) -> None:
    from PIL import Image
    rng = np.random.default_rng(0)
    for k, cls in enumerate(("cats", "dogs")):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(4):
            img = rng.integers(0, 256, (750, 1000, 3), np.uint8) // (k + 1)
            Image.fromarray(img.astype(np.uint8)).save(tmp_path / "photos" / cls / f"{i}.jpg")
    ds = cs.data.load_dataset(tmp_path / "photos")
    assert ds.input_shape == (3, 48, 64)
    assert "750x1000" in ds.info["input_note"] and "--input-size" in ds.info["input_note"]
    ds = cs.data.load_dataset(tmp_path / "photos", input_size=(30, 40))
    assert ds.input_shape == (3, 30, 40) and "input_note" not in ds.info
    with pytest.raises(DataError, match="max_pixels"):
        cs.data.load_dataset(tmp_path / "photos", input_size=(10 ** 5, 10 ** 5))
    with pytest.raises(DataError, match="image folder"):
        cs.data.load_dataset("digits", input_size=(30, 40))
    common = ("train", "--data", str(tmp_path / "photos"), "--epochs", "1", "--val-fraction",
              "0", "--quiet")
    r = run_cli(*common, "--out", str(tmp_path / "a"), cwd=tmp_path)
    assert r.rc == 0, r.stderr
    assert "resized to 48x64" in r.stderr and "--input-size HxW" in r.stderr
    assert read_metadata(tmp_path / "a" / "model.safetensors")["input_shape"] == [3, 48, 64]
    r = run_cli(*common, "--input-size", "24x32", "--out", str(tmp_path / "b"), cwd=tmp_path)
    assert r.rc == 0, r.stderr
    assert read_metadata(tmp_path / "b" / "model.safetensors")["input_shape"] == [3, 24, 32]
    r = run_cli(*common, "--input-size", "24", "--out", str(tmp_path / "c"), cwd=tmp_path)
    assert_refused(r, "--input-size must be HxW", "'24'")

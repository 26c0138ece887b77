"""Tests for convscope.data: readers, restricted unpickler, lookup, bundled data, images, batches."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import pickle
import struct
import sys
import tarfile
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from convscope.data import (Augment, BatchLoader, DataError, Normalizer, horizontal_flip,
                            load_dataset, load_image, load_image_folder, random_crop,
                            read_cifar_archive, read_cifar_binary, read_cifar_python, read_idx,
                            restricted_loads, stratified_split)
from convscope.data import dataset as dataset_mod
from convscope.data import sources

try:
    from PIL import Image
except ImportError:  # the image tests need Pillow; the rest do not
    Image = None
needs_pil = pytest.mark.skipif(Image is None, reason="Pillow not installed")

FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


# ------------------------------------------------------------------------------- helpers

def idx_bytes(arr: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    header = struct.pack(">HBB", 0, codes[arr.dtype], arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, compress: bool = True) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_mnist_like(folder: Path, n_train: int = 20, n_test: int = 10, label: int | None = None,
                     seed: int = 0) -> np.ndarray:
    """Four IDX .gz files; every label is ``label`` if given (to tell copies apart)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x_tr = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    x_te = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    y_tr = np.full(n_train, label, np.uint8) if label is not None else (np.arange(n_train) % 10).astype(np.uint8)
    y_te = np.full(n_test, label, np.uint8) if label is not None else (np.arange(n_test) % 10).astype(np.uint8)
    for name, arr in zip(IDX_NAMES, (x_tr, y_tr, x_te, y_te)):
        write_idx(folder / name, arr)
    return x_tr


def cifar_records(n: int, seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.uint8)
    raw = b"".join(bytes([y[i]]) + x[i].tobytes() for i in range(n))
    return raw, x, y.astype(np.int64)


def cifar_py_dict(n: int, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    y = [int(v) for v in rng.integers(0, 10, n)]
    d = {b"batch_label": b"training batch 1 of 5", b"labels": y, b"data": x,
         b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    return d, x.reshape(n, 3, 32, 32), np.array(y, np.int64)


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python 2 ``str`` (BINSTRING), as the real CIFAR-10 batches have them."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x (which wrote the real files) names the module numpy.core.multiarray
    return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No env var, a private cache, no system dirs, and no network."""
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(sources, "SYSTEM_DIRS", [tmp_path / "system"])

    def offline(url: str, timeout: float):
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(sources, "_urlopen", offline)
    return tmp_path


# --------------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path: Path, dtype: type, compress: bool) -> None:
    arr = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    if dtype == np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "a.idx", arr, compress))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_idx_labels_1d(tmp_path: Path) -> None:
    y = np.array([3, 1, 4, 1, 5], np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l.gz", y)), y)


def test_idx_truncated_payload(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((10, 28, 28), np.uint8))[:-100]
    p = tmp_path / "short-images.gz"
    p.write_bytes(gzip.compress(data))
    with pytest.raises(DataError) as e:
        read_idx(p)
    msg = str(e.value)
    assert "short-images.gz" in msg and "truncated" in msg
    assert "7840" in msg and "7740" in msg and "(10, 28, 28)" in msg


def test_idx_too_long(tmp_path: Path) -> None:
    p = tmp_path / "long.idx"
    p.write_bytes(idx_bytes(np.zeros(5, np.uint8)) + b"\0")
    with pytest.raises(DataError, match="too long.*5 bytes.*found 6"):
        read_idx(p)


def test_idx_truncated_gzip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gz = gzip.compress(idx_bytes(rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)))
    p = tmp_path / "cut.gz"
    p.write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError, match=r"cut\.gz.*truncated gzip"):
        read_idx(p)


def test_idx_corrupt_gzip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gz = bytearray(gzip.compress(idx_bytes(rng.integers(0, 256, (50, 28, 28), dtype=np.uint8))))
    gz[100:140] = b"\xff" * 40
    p = tmp_path / "bad.gz"
    p.write_bytes(bytes(gz))
    with pytest.raises(DataError, match=r"bad\.gz"):
        read_idx(p)


def test_idx_bad_magic(tmp_path: Path) -> None:
    p = tmp_path / "magic.gz"
    p.write_bytes(gzip.compress(b"\x12\x34\x08\x01" + struct.pack(">I", 3) + b"abc"))
    with pytest.raises(DataError, match=r"magic\.gz: bad IDX magic.*0x1234"):
        read_idx(p)


def test_idx_unknown_type_and_short_header(tmp_path: Path) -> None:
    p = tmp_path / "type.idx"
    p.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"a")
    with pytest.raises(DataError, match="unknown IDX type code 0x07"):
        read_idx(p)
    p.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 1))
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(p)
    p.write_bytes(b"")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(p)
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "missing.gz")


# ------------------------------------------------------------------------------ CIFAR-10

def test_cifar_binary_round_trip(tmp_path: Path) -> None:
    raw1, x1, y1 = cifar_records(3, seed=1)
    raw2, x2, y2 = cifar_records(2, seed=2)
    (tmp_path / "a.bin").write_bytes(raw1)
    (tmp_path / "b.bin").write_bytes(raw2)
    x, y = read_cifar_binary([tmp_path / "a.bin", tmp_path / "b.bin"])
    assert x.shape == (5, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, np.concatenate([x1, x2]))
    np.testing.assert_array_equal(y, np.concatenate([y1, y2]))
    # layout: label byte, then the 1024 red, 1024 green, 1024 blue values of record 0
    assert x[0, 1, 0, 0] == raw1[1 + 1024]


def test_cifar_binary_bad_length_and_label(tmp_path: Path) -> None:
    raw, _, _ = cifar_records(2)
    p = tmp_path / "data_batch_1.bin"
    p.write_bytes(raw[:-7])
    with pytest.raises(DataError, match=r"data_batch_1\.bin.*multiple of 3073.*6139 bytes"):
        read_cifar_binary(p)
    p.write_bytes(b"")
    with pytest.raises(DataError, match="3073"):
        read_cifar_binary(p)
    bad = bytearray(raw)
    bad[3073] = 42
    p.write_bytes(bytes(bad))
    with pytest.raises(DataError, match="record 1 has label 42"):
        read_cifar_binary(p)


@pytest.mark.parametrize("style", ["pickle.dump", "python2"])
def test_cifar_python_batch(tmp_path: Path, style: str) -> None:
    d, x, y = cifar_py_dict(4)
    p = tmp_path / "data_batch_1"
    if style == "pickle.dump":
        with open(p, "wb") as f:
            pickle.dump(d, f)
    else:
        p.write_bytes(py2_pickle(d))
        assert b"numpy.core.multiarray" in p.read_bytes()
    xr, yr = read_cifar_python(p)
    np.testing.assert_array_equal(xr, x)
    np.testing.assert_array_equal(yr, y)


def test_cifar_python_bad_structure(tmp_path: Path) -> None:
    p = tmp_path / "batch"
    d, _, _ = cifar_py_dict(3)
    cases = [
        ({k: v for k, v in d.items() if k != b"labels"}, "lacks the key 'labels'"),
        ({**d, b"data": d[b"data"].astype(np.float32)}, r"uint8 array of shape \(N, 3072\)"),
        ({**d, b"data": d[b"data"][:, :100]}, r"\(N, 3072\)"),
        ({**d, b"labels": d[b"labels"][:2]}, "3 images but 2 labels"),
        ({**d, b"labels": [0, 1, 12]}, r"0\.\.9"),
        ([1, 2, 3], "expected a pickled dict"),
    ]
    for obj, msg in cases:
        p.write_bytes(pickle.dumps(obj))
        with pytest.raises(DataError, match=msg):
            read_cifar_python(p)
    p.write_bytes(pickle.dumps(d)[:-50])
    with pytest.raises(DataError, match="corrupt or truncated pickle"):
        read_cifar_python(p)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("evil", [_Evil, _EvilEval])
def test_restricted_unpickler_refuses_code(tmp_path: Path, evil: type) -> None:
    marker = tmp_path / "pwned"
    payload = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": evil(marker)}
    blob = pickle.dumps(payload)
    # sanity: the plain unpickler really would run it
    pickle.loads(pickle.dumps(evil(tmp_path / "control")))
    assert (tmp_path / "control").exists()
    p = tmp_path / "data_batch_1"
    p.write_bytes(blob)
    with pytest.raises(DataError, match=r"data_batch_1: refused to unpickle the global (posix|nt|os|builtins)\.(system|eval)"):
        read_cifar_python(p)
    assert not marker.exists()


def test_restricted_unpickler_refuses_other_globals() -> None:
    for obj in (np.float64(1.0), np.load, {b"k": Path("/")}, set):
        with pytest.raises(DataError, match="refused to unpickle the global"):
            restricted_loads(pickle.dumps(obj))
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(restricted_loads(pickle.dumps(arr)), arr)


def _cifar_tar(path: Path, version: str, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    with tarfile.open(path, "w:gz") as tar:
        for i, base in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
            if version == "bin":
                raw, x, y = cifar_records(n, seed=i)
                name, data = f"cifar-10-batches-bin/{base}.bin", raw
            else:
                d, x, y = cifar_py_dict(n, seed=i)
                name, data = f"cifar-10-batches-py/{base}", pickle.dumps(d)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            xs.append(x)
            ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("version", ["bin", "py"])
def test_cifar_archive(tmp_path: Path, version: str) -> None:
    x, y = _cifar_tar(tmp_path / "c.tar.gz", version)
    x_tr, y_tr, x_te, y_te = read_cifar_archive(tmp_path / "c.tar.gz")
    assert x_tr.shape == (15, 3, 32, 32) and x_te.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(np.concatenate([x_tr, x_te]), x)
    np.testing.assert_array_equal(np.concatenate([y_tr, y_te]), y)


def test_cifar_archive_truncated(tmp_path: Path) -> None:
    _cifar_tar(tmp_path / "c.tar.gz", "bin")
    blob = (tmp_path / "c.tar.gz").read_bytes()
    (tmp_path / "c.tar.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"c\.tar\.gz"):
        read_cifar_archive(tmp_path / "c.tar.gz")


def test_load_cifar10_from_files(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = isolated / "data"
    d.mkdir()
    _cifar_tar(d / "cifar-10-binary.tar.gz", "bin", n=2)
    ds = load_dataset("cifar10", data_dir=d)
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (2, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32) and ds.classes[0] == "airplane"
    # extracted python batches under $CONVSCOPE_DATA/cifar10/cifar-10-batches-py
    py = isolated / "env" / "cifar10" / "cifar-10-batches-py"
    py.mkdir(parents=True)
    for i, base in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        (py / base).write_bytes(pickle.dumps(cifar_py_dict(2, seed=i)[0]))
    monkeypatch.setenv(sources.ENV_VAR, str(isolated / "env"))
    ds2 = load_dataset("cifar10")
    assert ds2.x_train.shape == (10, 3, 32, 32)
    assert ds2.info["files"][0].endswith("cifar-10-batches-py/data_batch_1")


# -------------------------------------------------------------------- lookup and download

def test_lookup_order(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env = isolated / "explicit", isolated / "env"
    cache = isolated / "xdg" / "convscope" / "mnist"
    system = isolated / "system" / "mnist"
    write_mnist_like(explicit, label=1)
    write_mnist_like(env / "mnist", label=2)
    write_mnist_like(cache, label=3)
    write_mnist_like(system, label=4)
    monkeypatch.setenv(sources.ENV_VAR, str(env))
    dirs = sources.search_dirs("mnist", explicit)
    assert dirs.index(explicit) < dirs.index(env / "mnist") < dirs.index(cache) < dirs.index(system)

    def label() -> int:
        return int(load_dataset("mnist", data_dir=explicit if explicit.exists() else None).y_train[0])

    assert label() == 1
    for folder, expected in ((explicit, 2), (env / "mnist", 3), (cache, 4)):
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
        assert label() == expected


def test_cache_dir_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert sources.cache_dir() == tmp_path / ".cache" / "convscope"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert sources.cache_dir() == tmp_path / "x" / "convscope"


def test_offline_error_lists_files_and_dirs(isolated: Path) -> None:
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", data_dir=isolated / "mine")
    msg = str(e.value)
    assert "network is unreachable" in msg
    for name in IDX_NAMES:
        assert name in msg
    for folder in (isolated / "mine", isolated / "xdg" / "convscope" / "fashion-mnist",
                   isolated / "system" / "fashion-mnist"):
        assert str(folder) in msg
    assert not (isolated / "xdg" / "convscope" / "fashion-mnist").exists() or \
        not any((isolated / "xdg" / "convscope" / "fashion-mnist").iterdir())


def test_no_download_when_disabled(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(url: str, timeout: float):
        raise AssertionError("must not download")

    monkeypatch.setattr(sources, "_urlopen", boom)
    with pytest.raises(DataError, match="(?s)download=False.*t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", download=False)


def _serve(files: dict[str, bytes], calls: list[str]):
    class Resp(io.BytesIO):
        headers = {}

    def opener(url: str, timeout: float):
        calls.append(url)
        name = url.rsplit("/", 1)[-1]
        if url.startswith("https://dead.invalid/"):
            raise urllib.error.URLError("dead mirror")
        return Resp(files[name])

    return opener


def test_download_verifies_and_caches(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src_dir = isolated / "upstream"
    write_mnist_like(src_dir)
    blobs = {n: (src_dir / n).read_bytes() for n in IDX_NAMES}
    spec = replace(sources.REGISTRY["mnist"],
                   files=tuple(sources.SourceFile(n, hashlib.sha256(b).hexdigest()) for n, b in blobs.items()),
                   mirrors=("https://dead.invalid/", "https://mirror.test/"))
    monkeypatch.setitem(sources.REGISTRY, "mnist", spec)
    calls: list[str] = []
    monkeypatch.setattr(sources, "_urlopen", _serve(blobs, calls))
    ds = load_dataset("mnist")
    assert ds.x_train.shape == (20, 1, 28, 28)
    cache = isolated / "xdg" / "convscope" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(IDX_NAMES)  # no .part left
    assert len(calls) == 8  # the dead mirror, then the live one, per file
    calls.clear()
    load_dataset("mnist")
    assert calls == []  # served from the cache


def test_download_checksum_mismatch(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = {n: b"not the real file" for n in IDX_NAMES}
    spec = replace(sources.REGISTRY["mnist"], mirrors=("https://mirror.test/",))
    monkeypatch.setitem(sources.REGISTRY, "mnist", spec)
    monkeypatch.setattr(sources, "_urlopen", _serve(blobs, []))
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        load_dataset("mnist")
    cache = isolated / "xdg" / "convscope" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_verify_rejects_fake_files(isolated: Path) -> None:
    write_mnist_like(isolated / "d")
    assert load_dataset("mnist", data_dir=isolated / "d").info["checksums"][IDX_NAMES[0]] == "not checked"
    with pytest.raises(DataError, match="SHA-256 mismatch.*440fcabf"):
        load_dataset("mnist", data_dir=isolated / "d", verify=True)


def test_idx_dataset_shape_checks(isolated: Path) -> None:
    d = isolated / "d"
    write_mnist_like(d)
    write_idx(d / IDX_NAMES[1], np.zeros(7, np.uint8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: expected 20 labels"):
        load_dataset("mnist", data_dir=d)


@pytest.mark.skipif(not FASHION_SYSTEM.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_fashion_mnist_system_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ds = load_dataset("fashion-mnist", download=False, verify=True)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert set(ds.info["checksums"].values()) <= {"sha256", "payload-sha256"}


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_dataset("nope")


# ------------------------------------------------------------------------ bundled datasets

@pytest.mark.parametrize("name,n_train,n_test", [("digits", 4000, 1000), ("fashion-small", 5000, 1000)])
def test_bundled(name: str, n_train: int, n_test: int) -> None:
    ds = load_dataset(name)
    assert ds.name == name and ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.x_train.shape == (n_train, 1, 28, 28) and ds.x_test.shape == (n_test, 1, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == [n_train // 10] * 10
    assert np.bincount(ds.y_test).tolist() == [n_test // 10] * 10
    assert ds.x_train.max() == 255 and ds.x_train.min() == 0
    # no image in both parts, no duplicate inside either
    train = {x.tobytes() for x in ds.x_train}
    test = {x.tobytes() for x in ds.x_test}
    assert len(train) == n_train and len(test) == n_test and not train & test
    # the labels are not sorted (shuffled) and the split is the published one
    assert (np.diff(ds.y_train) != 0).sum() > n_train // 2
    npz = dataset_mod.BUNDLED_DIR / f"{name}.npz"
    meta = json.loads((dataset_mod.BUNDLED_DIR / f"{name}.json").read_text())
    assert hashlib.sha256(npz.read_bytes()).hexdigest() == meta["sha256"]
    assert meta["train"]["count"] == n_train and meta["classes"] == ds.classes
    assert ds.licence == meta["licence"] and ds.licence in ("CC BY-SA 3.0", "MIT")
    with np.load(npz, allow_pickle=False) as z:
        assert z["classes"].dtype.kind == "U"


def test_bundled_sizes() -> None:
    assert (dataset_mod.BUNDLED_DIR / "fashion-small.npz").stat().st_size <= 3_000_000
    assert (dataset_mod.BUNDLED_DIR / "digits.npz").stat().st_size <= 1_500_000


def _build_script():
    path = Path(__file__).resolve().parent.parent / "scripts" / "build_datasets.py"
    spec = importlib.util.spec_from_file_location("build_datasets", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not FASHION_SYSTEM.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_fashion_small_rebuilds_identically(tmp_path: Path) -> None:
    _build_script().build_fashion(str(FASHION_SYSTEM), tmp_path)
    for suffix in (".npz", ".json"):
        built = (tmp_path / f"fashion-small{suffix}").read_bytes()
        assert built == (dataset_mod.BUNDLED_DIR / f"fashion-small{suffix}").read_bytes()


# ---------------------------------------------------------------------------------- images

def _save(img, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


@needs_pil
def test_load_image_modes(tmp_path: Path) -> None:
    red = Image.new("RGB", (40, 30), (255, 0, 0))
    pal = red.convert("P")
    grey = Image.new("L", (28, 28), 200)
    rgba = Image.new("RGBA", (10, 10), (255, 255, 255, 0))
    rgba.putpixel((5, 5), (255, 255, 255, 255))
    la = Image.new("LA", (8, 8), (255, 0))
    i16 = Image.new("I;16", (8, 8), 65535)
    files = {
        "rgb.png": _save(red, tmp_path / "rgb.png"),
        "rgb.jpg": _save(red, tmp_path / "rgb.jpg", quality=95),
        "pal.png": _save(pal, tmp_path / "pal.png"),
        "pal.gif": _save(pal, tmp_path / "pal.gif"),
        "grey.png": _save(grey, tmp_path / "grey.png"),
        "rgba.png": _save(rgba, tmp_path / "rgba.png"),
        "la.png": _save(la, tmp_path / "la.png"),
        "i16.png": _save(i16, tmp_path / "i16.png"),
        "cmyk.jpg": _save(red.convert("CMYK"), tmp_path / "cmyk.jpg"),
        "bw.bmp": _save(grey.convert("1"), tmp_path / "bw.bmp"),
    }
    for name, path in files.items():
        for shape in ((1, 28, 28), (3, 32, 32), (3, 5, 7)):
            a = load_image(path, shape)
            assert a.shape == shape and a.dtype == np.uint8, name
    assert load_image(files["rgb.png"], (3, 4, 4))[:, 0, 0].tolist() == [255, 0, 0]
    assert load_image(files["pal.png"], (3, 4, 4))[:, 0, 0].tolist() == [255, 0, 0]
    assert abs(int(load_image(files["rgb.png"], (1, 4, 4))[0, 0, 0]) - 76) <= 1  # ITU-R 601 luma
    assert load_image(files["grey.png"], (1, 28, 28))[0, 3, 3] == 200
    assert load_image(files["grey.png"], (3, 28, 28))[:, 3, 3].tolist() == [200] * 3
    transparent = load_image(files["rgba.png"], (1, 10, 10))
    assert transparent[0, 0, 0] == 0 and transparent[0, 5, 5] == 255  # alpha over black
    assert load_image(files["rgba.png"], (1, 10, 10), background=255)[0, 0, 0] == 255
    assert load_image(files["rgba.png"], (4, 10, 10))[3, 0, 0] == 0
    assert load_image(files["la.png"], (1, 8, 8)).max() == 0
    assert load_image(files["i16.png"], (1, 8, 8)).min() == 255  # 16-bit scaled, not clipped
    assert load_image(red, (3, 2, 2)).shape == (3, 2, 2)  # a Pillow image works too


@needs_pil
def test_load_image_tiny_and_huge(tmp_path: Path) -> None:
    tiny = _save(Image.new("RGB", (1, 1), (10, 20, 30)), tmp_path / "tiny.png")
    a = load_image(tiny, (3, 32, 32))
    assert a.shape == (3, 32, 32) and a[:, 16, 16].tolist() == [10, 20, 30]
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (2000, 3000, 3), dtype=np.uint8))
    huge = _save(big, tmp_path / "huge.jpg", quality=80)
    b = load_image(huge, (3, 32, 32))
    assert b.shape == (3, 32, 32) and 100 < b.mean() < 155  # averaged noise
    assert load_image(huge, (1, 28, 28)).shape == (1, 28, 28)


@needs_pil
def test_load_image_fit(tmp_path: Path) -> None:
    wide = Image.new("L", (100, 50), 255)
    p = _save(wide, tmp_path / "wide.png")
    padded = load_image(p, (1, 20, 20), fit="pad")
    assert padded[0, 0, 10] == 0 and padded[0, 10, 10] == 255 and padded[0, 19, 10] == 0
    assert load_image(p, (1, 20, 20), fit="crop").min() == 255
    assert load_image(p, (1, 20, 20), fit="stretch").min() == 255
    with pytest.raises(DataError, match="fit must be"):
        load_image(p, (1, 20, 20), fit="zoom")
    with pytest.raises(DataError, match="input_shape"):
        load_image(p, (2, 20, 20))


@needs_pil
def test_load_image_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"bad\.png: cannot read image"):
        load_image(bad, (1, 28, 28))
    with pytest.raises(DataError, match="no such image"):
        load_image(tmp_path / "none.png", (1, 28, 28))
    good = _save(Image.new("RGB", (4, 4)), tmp_path / "t.jpg")
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg", (1, 28, 28))
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match="pip install pillow"):
        load_image(good, (1, 28, 28))


def _make_folder(root: Path, per_class: int = 5) -> None:
    colours = {"cat": (255, 0, 0), "dog": (0, 255, 0), "eel": (0, 0, 255)}
    for k, (cls, colour) in enumerate(colours.items()):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = Image.new("RGB", (20 + i, 10 + 3 * i), colour)
            if i % 3 == 1:
                img = img.convert("RGBA")
            elif i % 3 == 2:
                img = img.convert("P")
            img.save(root / cls / f"{i}.{'jpg' if i == 0 else 'png'}")
        (root / cls / "notes.txt").write_text("not an image")


@needs_pil
def test_load_image_folder(tmp_path: Path) -> None:
    _make_folder(tmp_path / "pets")
    x, y, classes = load_image_folder(tmp_path / "pets", (3, 16, 16))
    assert classes == ["cat", "dog", "eel"] and x.shape == (15, 3, 16, 16) and x.dtype == np.uint8
    assert y.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert x[y == 1][:, 1].mean() > 200 and x[y == 1][:, 0].mean() < 50  # dogs are green
    xi, _, _ = load_image_folder(tmp_path / "pets")  # mixed sizes -> 32 x 32, colour -> 3
    assert xi.shape == (15, 3, 32, 32)


@needs_pil
def test_load_dataset_from_folder(tmp_path: Path) -> None:
    _make_folder(tmp_path / "pets")
    ds = load_dataset(tmp_path / "pets", input_shape=(1, 12, 12), test_fraction=0.2, seed=3)
    assert ds.classes == ["cat", "dog", "eel"] and ds.input_shape == (1, 12, 12)
    assert len(ds.y_train) == 12 and np.bincount(ds.y_test).tolist() == [1, 1, 1]
    again = load_dataset(str(tmp_path / "pets"), input_shape=(1, 12, 12), test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    # explicit train/ and test/ folders
    for part, n in (("train", 4), ("test", 2)):
        for cls in ("a", "b"):
            (tmp_path / "split" / part / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("L", (9, 9), 40 * i).save(tmp_path / "split" / part / cls / f"{i}.png")
    ds2 = load_dataset(tmp_path / "split")
    assert ds2.input_shape == (1, 9, 9) and len(ds2.x_train) == 8 and len(ds2.x_test) == 4


@needs_pil
def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="one sub-folder per class"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(DataError, match="class folder has no images"):
        load_image_folder(tmp_path / "empty")


# --------------------------------------------------------------------------------- batches

def _toy(n: int = 50, c: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, c, 8, 8), dtype=np.uint8), np.arange(n) % 5


def test_batch_loader_seeded() -> None:
    x, y = _toy()
    a = [(xb.copy(), yb.copy()) for xb, yb in BatchLoader(x, y, 16, seed=7)]
    b = [(xb.copy(), yb.copy()) for xb, yb in BatchLoader(x, y, 16, seed=7)]
    c = [yb for _, yb in BatchLoader(x, y, 16, seed=8)]
    assert len(a) == 4 and [len(yb) for _, yb in a] == [16, 16, 16, 2]
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(ya, yc) for (_, ya), yc in zip(a, c))
    xa, ya = a[0]
    assert xa.dtype == np.float32 and xa.shape == (16, 3, 8, 8) and ya.dtype == np.int64
    assert xa.min() >= 0 and xa.max() <= 1
    # each epoch is a permutation, and epochs differ
    loader = BatchLoader(x, np.arange(50), 16, seed=7)
    e1 = np.concatenate([yb for _, yb in loader])
    e2 = np.concatenate([yb for _, yb in loader])
    assert sorted(e1) == list(range(50)) and sorted(e2) == list(range(50))
    assert not np.array_equal(e1, e2) and loader.epoch == 2
    # resuming at epoch 1 gives the second epoch again
    resumed = BatchLoader(x, np.arange(50), 16, seed=7)
    resumed.epoch = 1
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in resumed]), e2)
    # images match their labels after shuffling
    loader = BatchLoader(x, np.arange(50), 16, seed=1)
    for xb, yb in loader:
        np.testing.assert_array_equal(xb, x[yb].astype(np.float32) / 255)
    assert len(BatchLoader(x, y, 16, drop_last=True)) == 3
    unshuffled = np.concatenate([yb for _, yb in BatchLoader(x, np.arange(50), 16, shuffle=False)])
    assert unshuffled.tolist() == list(range(50))
    with pytest.raises(DataError):
        BatchLoader(x, y[:10], 16)


def test_augmentation() -> None:
    x, _ = _toy(20)
    rng = np.random.default_rng(0)
    out = random_crop(x, 2, rng)
    assert out.shape == x.shape and out.dtype == np.uint8
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i in range(len(x)):  # every crop is a window of the zero-padded image
        assert any(np.array_equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])
                   for dy in range(5) for dx in range(5))
    assert not np.array_equal(out, x)
    np.testing.assert_array_equal(random_crop(x, 2, np.random.default_rng(5)),
                                  random_crop(x, 2, np.random.default_rng(5)))
    np.testing.assert_array_equal(random_crop(x, 0, rng), x)
    np.testing.assert_array_equal(horizontal_flip(x, rng, p=1.0), x[..., ::-1])
    np.testing.assert_array_equal(horizontal_flip(x, rng, p=0.0), x)
    f = horizontal_flip(x, np.random.default_rng(3))
    flipped = [np.array_equal(f[i], x[i, :, :, ::-1]) for i in range(len(x))]
    kept = [np.array_equal(f[i], x[i]) for i in range(len(x))]
    assert all(a or b for a, b in zip(flipped, kept)) and any(flipped) and any(kept)
    aug = Augment(crop_padding=1, hflip=True)
    assert Augment.from_dict(json.loads(json.dumps(aug.to_dict()))) == aug
    xb, yb = next(iter(BatchLoader(x, np.zeros(20, int), 8, augment=aug)))
    assert xb.shape == (8, 3, 8, 8) and xb.dtype == np.float32


def test_normalizer() -> None:
    x, y = _toy(200)
    x[:, 1] //= 4  # channels with different statistics
    norm = Normalizer.fit(x, chunk=64)
    xf = x.astype(np.float64) / 255
    np.testing.assert_allclose(norm.mean, xf.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(norm.std, xf.std(axis=(0, 2, 3)), rtol=1e-9)
    z = norm(x)
    assert z.dtype == np.float32 and z.shape == x.shape
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-4)
    back = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert back == norm and isinstance(norm.to_dict()["mean"], list)
    np.testing.assert_array_equal(back(x), z)
    np.testing.assert_allclose(norm.inverse(z), xf, atol=1e-5)
    assert norm(x[0]).shape == x[0].shape  # one (C, H, W) image
    xb, _ = next(iter(BatchLoader(x, y, 10, normalizer=norm, shuffle=False)))
    np.testing.assert_array_equal(xb, z[:10])
    const = Normalizer.fit(np.full((2, 1, 3, 3), 7, np.uint8))
    assert const.std == (1.0,)
    with pytest.raises(DataError):
        Normalizer.from_dict({"mean": [0.5]})
    with pytest.raises(DataError):
        norm(np.zeros((1, 1, 8, 8), np.uint8))


def test_stratified_split() -> None:
    y = np.repeat(np.arange(4), [10, 10, 5, 2])
    tr, te = stratified_split(y, 0.2, seed=1)
    assert sorted(np.concatenate([tr, te])) == list(range(len(y)))
    assert np.bincount(y[te]).tolist() == [2, 2, 1, 1]
    tr2, te2 = stratified_split(y, 0.2, seed=1)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(te, te2)

"""Readers for the official dataset file formats: IDX (MNIST, Fashion-MNIST) and CIFAR-10.

Every reader validates what it reads and raises :class:`DataError` naming the file, what was
expected and what was found. CIFAR-10's python batches are read through a restricted
unpickler that builds numpy arrays and nothing else.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

from .. import limits
from ..errors import DataError

__all__ = [
    "DataError",
    "CIFAR10_CLASSES",
    "CIFAR_RECORD_BYTES",
    "read_idx",
    "parse_idx",
    "read_cifar_binary",
    "parse_cifar_binary",
    "read_cifar_python",
    "parse_cifar_python",
    "restricted_loads",
    "RestrictedUnpickler",
    "read_cifar_archive",
]

PathLike = str | os.PathLike[str]




# --------------------------------------------------------------------------------------- IDX

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"
#: The most deflate can compress: 1032 bytes out per byte in (zlib's technical notes).
_DEFLATE_RATIO = 1032


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[tuple[BinaryIO, int, bool]]:
    """(stream, bytes on disk, gzipped): the file, gunzipped on the fly when it starts with the
    gzip magic; gzip's and the disk's errors become DataError naming the file."""
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    with raw:
        try:
            disk = os.fstat(raw.fileno()).st_size
            gz = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw  # type: ignore[assignment]
            yield stream, disk, gz
        except EOFError as exc:
            raise DataError(
                f"{path}: truncated gzip file ({disk} bytes on disk; the compressed stream ends "
                "early): download or copy it again"
            ) from exc
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip file ({exc})") from exc
        except OSError as exc:
            raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from exc


def _read_into(stream: BinaryIO, buf: memoryview) -> int:
    """Fill ``buf`` from ``stream`` as far as it goes; the bytes read."""
    got = 0
    while got < len(buf):
        n = stream.readinto(buf[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic, at most
    ``max_decoded_bytes`` of it (a gzip stream is inflated no further than that)."""
    cap = limits.limit("max_decoded_bytes")
    with _opened(path) as (f, disk, gz):
        if not gz:
            limits.check("max_decoded_bytes", disk, "the file", DataError, f"{path}: ")
        data = bytearray()  # in chunks: read(n) would reserve n bytes before the first one
        while len(data) <= cap:
            chunk = f.read(min(2 ** 20, cap + 1 - len(data)))
            if not chunk:
                break
            data += chunk
    if len(data) > cap:
        raise DataError(f"{path}: " + (limits.exceeds("max_decoded_bytes", len(data),
                                                      "its gunzipped data (at least)") or ""))
    return bytes(data)


def _idx_header(data: bytes, name: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """(big-endian dtype, dims, header length) from the first bytes of an IDX file."""
    if len(data) < 4:
        raise DataError(f"{name}: not an IDX file: {len(data)} bytes, the header alone is 4+")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DataError(
            f"{name}: bad IDX magic number: expected the first two bytes 0x0000, found "
            f"0x{zero:04x} (is this an IDX file?)"
        )
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES)
        raise DataError(f"{name}: unknown IDX type code 0x{type_code:02x} (expected one of {known})")
    if ndim == 0:
        raise DataError(f"{name}: IDX header says 0 dimensions; expected at least 1")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{name}: truncated IDX header: {ndim} dimensions need {header_len} header bytes, "
            f"found {len(data)}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    return np.dtype(_IDX_DTYPES[type_code]), dims, header_len


def _idx_size_error(name: str, dims: tuple[int, ...], dtype: np.dtype, header_len: int,
                    expected: int, found: int | str) -> DataError:
    short = isinstance(found, int) and found < expected
    return DataError(
        f"{name}: {'truncated' if short else 'too long'} IDX data: header says shape "
        f"{tuple(dims)} of {dtype.name} = {expected} bytes after the {header_len}-byte header, "
        f"found {found}"
    )


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an IDX file into an array in native byte order.

    Raises DataError (naming ``name``) for a bad magic number, an unknown type code, or a
    byte count that does not match the dimensions in the header.
    """
    dtype, dims, header_len = _idx_header(data, name)
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header_len
    if found != expected:
        raise _idx_size_error(name, dims, dtype, header_len, expected, found)
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or uncompressed) into an array in native byte order.

    The header's dimensions are checked against the file's size (uncompressed) and
    ``max_decoded_bytes`` before the data is read; a gzip stream is inflated straight into the
    array and no further than the size the header declares (and one byte more, to tell a file
    that is too long).  Raises DataError naming the file when it is truncated, corrupt or not
    IDX.
    """
    path = Path(path)
    name = str(path)
    with _opened(path) as (f, disk, gz):
        head = f.read(4)
        if len(head) == 4:
            head += f.read(4 * head[3])
        dtype, dims, header_len = _idx_header(head, name)
        expected = math.prod(dims) * dtype.itemsize
        if not gz and disk - header_len != expected:  # known from the size alone
            raise _idx_size_error(name, dims, dtype, header_len, expected, disk - header_len)
        limits.check("max_decoded_bytes", expected, f"its data (shape {tuple(dims)} of "
                     f"{dtype.name}, as its header says)", DataError, f"{name}: ")
        if gz and expected > _DEFLATE_RATIO * disk:
            raise DataError(f"{name}: corrupt IDX header: it declares shape {tuple(dims)} of "
                            f"{dtype.name} = {expected:,} bytes, but a gzip file of {disk:,} bytes "
                            f"holds at most {_DEFLATE_RATIO * disk:,} (deflate's {_DEFLATE_RATIO}:1)")
        arr = np.empty(dims, dtype.newbyteorder("="))
        got = _read_into(f, memoryview(arr.reshape(-1).view(np.uint8)))
        if got < expected:
            raise _idx_size_error(name, dims, dtype, header_len, expected, got)
        if f.read(1):
            raise _idx_size_error(name, dims, dtype, header_len, expected, f"more than {expected}")
    if dtype.itemsize > 1 and dtype != dtype.newbyteorder("="):
        arr.byteswap(inplace=True)  # the file is big-endian; the bytes were read as they lie
    return arr


# ---------------------------------------------------------------------------------- CIFAR-10

CIFAR10_CLASSES: list[str] = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]
CIFAR_RECORD_BYTES = 1 + 3 * 32 * 32  # label byte + 3072 pixel bytes (R, G, B planes)


def parse_cifar_binary(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Parse a CIFAR-10 binary batch: ``(images uint8 (N,3,32,32), labels int64 (N,))``."""
    if len(data) == 0 or len(data) % CIFAR_RECORD_BYTES:
        raise DataError(
            f"{name}: not a CIFAR-10 binary batch: expected a positive multiple of "
            f"{CIFAR_RECORD_BYTES} bytes (one label byte + 3072 pixels per record), found "
            f"{len(data)} bytes ({len(data) / CIFAR_RECORD_BYTES:.3f} records)"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        bad = int(np.argmax(labels >= len(CIFAR10_CLASSES)))
        raise DataError(
            f"{name}: record {bad} has label {labels[bad]}; CIFAR-10 labels are 0..9 "
            "(is this a CIFAR-100 file?)"
        )
    images = records[:, 1:].reshape(-1, 3, 32, 32).copy()
    return images, labels


def read_cifar_binary(paths: PathLike | list[PathLike]) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate CIFAR-10 binary batches (``data_batch_*.bin``, ``test_batch.bin``)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    parts = [parse_cifar_binary(_read_bytes(Path(p)), str(p)) for p in paths]
    if not parts:
        raise DataError("read_cifar_binary: no files given")
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


# The only globals a CIFAR-10 python batch needs: numpy's array reconstruction.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {}


def _allowed_globals() -> dict[tuple[str, str], Any]:
    if not _ALLOWED_GLOBALS:
        try:
            from numpy._core.multiarray import _reconstruct  # numpy >= 2
        except ImportError:  # pragma: no cover - numpy 1.x
            from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
        _ALLOWED_GLOBALS.update({
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        })
    return _ALLOWED_GLOBALS


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array-reconstruction globals.

    Any other global (``os.system``, ``builtins.eval``, any class) raises DataError before it
    is looked up, so a malicious pickle cannot run code through it.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in _allowed_globals())
            raise DataError(
                f"refused to unpickle the global {module}.{name}: only numpy arrays are "
                f"allowed ({allowed}); the file is not a CIFAR-10 python batch or is malicious"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError("refused to unpickle a persistent id: not a CIFAR-10 python batch")


def restricted_loads(data: bytes, name: str = "<bytes>") -> Any:
    """Unpickle ``data`` allowing only numpy arrays, dicts, lists and plain values.

    Byte strings from Python 2 pickles stay ``bytes`` (``encoding="bytes"``).
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as exc:
        raise DataError(f"{name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DataError(f"{name}: corrupt or truncated pickle ({type(exc).__name__}: {exc})") from exc


def _key(d: dict[Any, Any], key: str) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise KeyError(key)


def parse_cifar_python(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Parse a CIFAR-10 python batch (a pickled dict) into ``(images, labels)``.

    Expects ``data``: uint8 array (N, 3072) and ``labels``: N ints in 0..9.
    """
    obj = restricted_loads(data, name)
    if not isinstance(obj, dict):
        raise DataError(f"{name}: expected a pickled dict (CIFAR-10 python batch), found {type(obj).__name__}")
    try:
        images, labels = _key(obj, "data"), _key(obj, "labels")
    except KeyError as exc:
        keys = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in obj)
        raise DataError(f"{name}: CIFAR-10 batch lacks the key {exc}; found keys {keys}") from None
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 \
            or images.shape[1] != 3072:
        found = f"{images.dtype} array {images.shape}" if isinstance(images, np.ndarray) \
            else type(images).__name__
        raise DataError(f"{name}: 'data' must be a uint8 array of shape (N, 3072), found {found}")
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):
        raise DataError(f"{name}: 'labels' must be a list of ints")
    if len(labels) != len(images):
        raise DataError(f"{name}: {len(images)} images but {len(labels)} labels")
    y = np.asarray(labels, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= len(CIFAR10_CLASSES)):
        raise DataError(f"{name}: labels must be in 0..9, found {y.min()}..{y.max()}")
    return images.reshape(-1, 3, 32, 32).copy(), y


def read_cifar_python(paths: PathLike | list[PathLike]) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate CIFAR-10 python batches (``data_batch_1``... ``test_batch``)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    parts = [parse_cifar_python(_read_bytes(Path(p)), str(p)) for p in paths]
    if not parts:
        raise DataError("read_cifar_python: no files given")
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def read_cifar_archive(path: PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read CIFAR-10 from its official ``.tar.gz`` (binary or python version) without extracting.

    Returns ``(x_train, y_train, x_test, y_test)``. Only the expected member names are read.
    """
    path = Path(path)
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                base = info.name.rsplit("/", 1)[-1]
                if info.isfile() and base.removesuffix(".bin") in (*_TRAIN_BATCHES, "test_batch"):
                    limits.check("max_decoded_bytes", info.size, f"member {base!r}", DataError,
                                 f"{path}: ")
                    f = tar.extractfile(info)
                    assert f is not None
                    members[base] = f.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt archive ({' '.join(str(exc).split())})"
                        ) from exc
    binary = "test_batch.bin" in members
    suffix = ".bin" if binary else ""
    needed = [b + suffix for b in (*_TRAIN_BATCHES, "test_batch")]
    missing = [m for m in needed if m not in members]
    if missing:
        raise DataError(f"{path}: archive lacks {missing}; expected the CIFAR-10 binary or python version")
    parse = parse_cifar_binary if binary else parse_cifar_python
    train = [parse(members[b + suffix], f"{path}:{b + suffix}") for b in _TRAIN_BATCHES]
    x_test, y_test = parse(members["test_batch" + suffix], f"{path}:test_batch{suffix}")
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
            x_test, y_test)

"""The safetensors container of model files and checkpoints: a reader that executes nothing.

A file is an 8-byte little-endian header length, a JSON header and the raw tensor bytes.  The
header's ``__metadata__`` holds ``format`` (:data:`MODEL_FORMAT` or :data:`CHECKPOINT_FORMAT`),
``format_version`` and ``convscope``: the JSON metadata.  Reading parses the header with
``json`` and the arrays with ``np.frombuffer`` after checking every offset, dtype and shape, so
the safetensors library is needed only to write.

Format versions: 1 stored pools as ``{"type": "pool", "kind": ...}``, every batch norm as
``"batchnorm"`` and no ``fit`` key; 2 stores each layer under its registered kind name
(``maxpool``, ``avgpool``, ``batchnorm1d``, ...) with ``fit``.  Both are read.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import numpy as np

from .. import limits
from .._version import __version__
from ..errors import ModelFileError
from .files import atomic_write

__all__ = ["FORMAT_VERSION", "READ_VERSIONS", "MODEL_FORMAT", "CHECKPOINT_FORMAT",
           "write_safetensors", "read_safetensors"]

#: The version this convscope writes, and the versions it reads.
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
MODEL_FORMAT = "convscope.model"
CHECKPOINT_FORMAT = "convscope.checkpoint"
_MAX_HEADER = 64 * 1024 * 1024

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}


def write_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray],
                      kind: str, meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` with header metadata ``format=kind``, ``format_version`` and
    ``convscope=json(meta)``, atomically; return the path."""
    try:
        from safetensors.numpy import save  # noqa: PLC0415 - optional until a file is written
    except ImportError:  # pragma: no cover - safetensors is a dependency
        raise ImportError("writing model files needs safetensors: pip install safetensors") from None
    arrays = {k: np.array(v, order="C") for k, v in tensors.items()}  # keeps 0-d (ascontiguousarray makes 1-d)
    header = {"format": kind, "format_version": str(FORMAT_VERSION),
              "convscope": json.dumps(meta, separators=(",", ":"), allow_nan=False)}
    return atomic_write(path, save(arrays, metadata=header))


def _read_header(path: Path, f: BinaryIO, size: int) -> tuple[dict[str, Any], int]:
    """The JSON header of the open file ``f`` of ``size`` bytes and where the data starts; the
    header's length is checked against the file and ``max_json_bytes`` before it is read."""
    if size < 8:
        raise ModelFileError(f"{path}: {size} bytes is too short for a safetensors file "
                             "(truncated or not a model file)")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > _MAX_HEADER:
        raise ModelFileError(f"{path}: corrupt header (it claims {n:,} bytes); not a safetensors "
                             "model file")
    if 8 + n > size:
        raise ModelFileError(f"{path}: truncated: the header needs {n:,} bytes but only "
                             f"{size - 8:,} follow")
    limits.check("max_json_bytes", n, "its header", ModelFileError, f"{path}: ")
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: corrupt header ({exc})") from None
    except RecursionError:
        raise ModelFileError(f"{path}: corrupt header (JSON nested too deeply)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: corrupt header (not a JSON object)")
    return header, 8 + n


def _check_meta(path: Path, header: dict[str, Any], kind: str) -> dict[str, Any]:
    meta = header.get("__metadata__")
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != kind:
        if fmt == CHECKPOINT_FORMAT:
            raise ModelFileError(f"{path}: this is a training checkpoint, not a model file; use "
                                 f"the model.safetensors next to it")
        if fmt == MODEL_FORMAT:
            raise ModelFileError(f"{path}: this is a model file, not a training checkpoint")
        raise ModelFileError(f"{path}: a safetensors file but not a convscope "
                             f"{kind.split('.')[1]} (its metadata has format {fmt!r})")
    version = meta.get("format_version")
    if version not in [str(v) for v in READ_VERSIONS]:
        raise ModelFileError(f"{path}: format version {version} but this convscope "
                             f"({__version__}) reads versions {', '.join(map(str, READ_VERSIONS))};"
                             " use the convscope that wrote it, or retrain")
    try:
        info = json.loads(meta.get("convscope", ""))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ModelFileError(f"{path}: corrupt metadata ({exc})") from None
    except RecursionError:
        raise ModelFileError(f"{path}: corrupt metadata (JSON nested too deeply)") from None
    if not isinstance(info, dict):
        raise ModelFileError(f"{path}: corrupt metadata (not a JSON object)")
    return info


def read_safetensors(path: str | os.PathLike[str], kind: str = MODEL_FORMAT
                     ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(tensors, meta)`` from a file written by :func:`write_safetensors`, every offset,
    dtype and shape checked first.  Raises :class:`ModelFileError` with a one-line reason.

    Memory: the header (at most ``max_json_bytes``) and each tensor read straight into its own
    array once every entry has been checked against the file's size: 1× the file in all.
    """
    path = Path(path)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a folder, not a model file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror})") from None
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
            header, start = _read_header(path, f, size)
            info = _check_meta(path, header, kind)
            entries = _entries(path, header, size - start)
            return {name: _read_tensor(path, f, start, *e) for name, e in entries.items()}, info
        except IsADirectoryError:
            raise ModelFileError(f"{path}: is a folder, not a model file") from None
        except OSError as exc:
            raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _entries(path: Path, header: dict[str, Any], data_size: int
             ) -> dict[str, tuple[np.dtype, tuple[int, ...], int, int]]:
    """(dtype, shape, begin, end) of every tensor, each checked against ``data_size`` bytes of
    data (Python integers: no product overflows)."""
    out = {}
    end_max = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_DTYPES[entry["dtype"]])
            shape = tuple(int(s) for s in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise ModelFileError(f"{path}: corrupt header entry for {name!r}: {entry!r}"[:300]
                                 ) from None
        count = math.prod(shape)
        if min(shape, default=0) < 0 or begin < 0 or end - begin != count * dtype.itemsize:
            raise ModelFileError(f"{path}: corrupt header entry for {name!r}: shape {list(shape)} "
                                 f"of {entry['dtype']} does not fill bytes {begin}..{end}"[:300])
        if end > data_size:
            raise ModelFileError(f"{path}: truncated: tensor {name!r} needs bytes up to {end:,} "
                                 f"of the data, the file holds {data_size:,}")
        end_max = max(end_max, end)
        out[str(name)] = (dtype, shape, begin, end)
    # -- H2: the ranges tile the data: no byte read as two tensors, none read as none --
    at, before = 0, "the start of the data"
    for name, (_, _, begin, end) in sorted(out.items(), key=lambda kv: kv[1][2:]):
        if begin != at:
            what = "overlap" if begin < at else f"leave {begin - at:,} bytes between them unused"
            raise ModelFileError(f"{path}: corrupt: {before} and tensor {name!r} (bytes "
                                 f"{begin:,}..{end:,}) {what}"[:300])
        at, before = end, f"tensor {name!r}"
    if end_max < data_size:
        raise ModelFileError(f"{path}: corrupt: {data_size - end_max:,} bytes after the last "
                             "tensor")
    return out


def _read_tensor(path: Path, f: BinaryIO, start: int, dtype: np.dtype, shape: tuple[int, ...],
                 begin: int, end: int) -> np.ndarray:
    """One tensor read from ``f`` into a new array in native byte order."""
    arr = np.empty(shape, dtype.newbyteorder("="))
    if arr.size:
        f.seek(start + begin)
        got = f.readinto(memoryview(arr.reshape(-1).view(np.uint8)))
        if got != end - begin:  # the file shrank while being read
            raise ModelFileError(f"{path}: truncated while reading ({got:,} of {end - begin:,} "
                                 "bytes)")
        if dtype.byteorder not in ("=", "|") and dtype != dtype.newbyteorder("="):
            arr.byteswap(inplace=True)  # the file is little-endian, this machine is not
    return arr

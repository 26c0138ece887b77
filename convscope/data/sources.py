"""Where the full datasets live: the registry, the lookup order, the cache and the download.

Lookup order for a dataset's files: an explicit ``data_dir``, the environment variable
``CONVSCOPE_DATA``, the user cache (``$XDG_CACHE_HOME/convscope`` or ``~/.cache/convscope``),
then system copies (``/usr/share/datasets/<name>``, e.g. Debian's ``dataset-fashion-mnist``).
When none has them, they are downloaded from the official source into the cache, checked
against the SHA-256 digests below and written atomically.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .formats import DataError

__all__ = [
    "SourceFile",
    "DatasetSource",
    "REGISTRY",
    "cache_dir",
    "search_dirs",
    "find_files",
    "download_file",
    "sha256_file",
    "verify_file",
]

ENV_VAR = "CONVSCOPE_DATA"
#: Roots searched for system copies; each is searched as ``root/<name>``. Tests patch this.
SYSTEM_DIRS: list[Path] = [Path("/usr/share/datasets")]
#: Seconds before a download attempt gives up on a silent server.
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SourceFile:
    """One official file: its name, SHA-256 as published, and (optionally) of its gunzipped
    payload, which also identifies recompressed copies such as Debian's."""

    name: str
    sha256: str
    payload_sha256: str | None = None


@dataclass(frozen=True)
class DatasetSource:
    """A full dataset: its files, mirrors, the sub-folder names it may sit in, and licence."""

    name: str
    files: tuple[SourceFile, ...]
    mirrors: tuple[str, ...]
    folders: tuple[str, ...]
    licence: str
    homepage: str
    #: Alternative file sets accepted when found locally (e.g. CIFAR-10's python version).
    alternatives: tuple[tuple[str, ...], ...] = field(default_factory=tuple)


_IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

REGISTRY: dict[str, DatasetSource] = {
    "mnist": DatasetSource(
        name="mnist",
        files=(
            SourceFile(_IDX_NAMES[0], "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            SourceFile(_IDX_NAMES[1], "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            SourceFile(_IDX_NAMES[2], "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            SourceFile(_IDX_NAMES[3], "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        ),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://yann.lecun.com/exdb/mnist/"),
        folders=("mnist", "MNIST/raw"),
        licence="CC BY-SA 3.0 (Yann LeCun, Corinna Cortes, Christopher J. C. Burges)",
        homepage="https://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": DatasetSource(
        name="fashion-mnist",
        # Published .gz digests; payload digests computed from Debian's copies
        # (dataset-fashion-mnist 0.0~git20200523.55506a9-1). Debian's .gz differ from the
        # published ones (other MD5) by a re-written gzip header: each is shorter by exactly the
        # original file name + NUL (e.g. 26,421,856 vs 26,421,880 bytes for train-images).
        files=(
            SourceFile(_IDX_NAMES[0], "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                       "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            SourceFile(_IDX_NAMES[1], "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                       "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
            SourceFile(_IDX_NAMES[2], "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                       "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            SourceFile(_IDX_NAMES[3], "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                       "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        folders=("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
        licence="MIT (Copyright (c) 2017 Zalando SE)",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "cifar10": DatasetSource(
        name="cifar10",
        files=(SourceFile("cifar-10-binary.tar.gz",
                          "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        folders=("cifar10", "cifar-10"),
        licence="no explicit licence; cite Krizhevsky, 'Learning Multiple Layers of Features "
                "from Tiny Images', 2009",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        alternatives=(
            ("cifar-10-batches-bin/data_batch_1.bin", "cifar-10-batches-bin/data_batch_2.bin",
             "cifar-10-batches-bin/data_batch_3.bin", "cifar-10-batches-bin/data_batch_4.bin",
             "cifar-10-batches-bin/data_batch_5.bin", "cifar-10-batches-bin/test_batch.bin"),
            ("data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
             "data_batch_5.bin", "test_batch.bin"),
            ("cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/data_batch_2",
             "cifar-10-batches-py/data_batch_3", "cifar-10-batches-py/data_batch_4",
             "cifar-10-batches-py/data_batch_5", "cifar-10-batches-py/test_batch"),
            ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
             "test_batch"),
            ("cifar-10-python.tar.gz",),
        ),
    ),
}


def cache_dir() -> Path:
    """The user cache: ``$XDG_CACHE_HOME/convscope``, else ``~/.cache/convscope``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "convscope"


def search_dirs(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched for dataset ``name``, in order (existing or not)."""
    src = _source(name)
    dirs: list[Path] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        dirs += [root / f for f in src.folders] + [root]
    env = os.environ.get(ENV_VAR)
    if env:
        dirs += [Path(env).expanduser() / f for f in src.folders]
    dirs += [cache_dir() / f for f in src.folders]
    for root in SYSTEM_DIRS:
        dirs += [root / f for f in src.folders]
    return list(dict.fromkeys(dirs))


def _source(name: str) -> DatasetSource:
    try:
        return REGISTRY[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {sorted(REGISTRY)}") from None


def _present(folder: Path, names: tuple[str, ...]) -> list[Path] | None:
    """Paths of ``names`` in ``folder`` (each also accepted without ``.gz``), or None."""
    found = []
    for n in names:
        for cand in (folder / n, folder / n.removesuffix(".gz")):
            if cand.is_file():
                found.append(cand)
                break
        else:
            return None
    return found


def find_files(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path] | None:
    """The first complete set of files for ``name`` in :func:`search_dirs` order, or None."""
    src = _source(name)
    sets = (tuple(f.name for f in src.files), *src.alternatives)
    for folder in search_dirs(name, data_dir):
        if not folder.is_dir():
            continue
        for names in sets:
            found = _present(folder, names)
            if found:
                return found
    return None


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: str | os.PathLike[str], expected: SourceFile) -> str:
    """Check a local file against the official digests; return how it matched.

    Accepts the published file (``"sha256"``) or, where known, a recompressed copy whose
    gunzipped payload matches (``"payload-sha256"``). Raises DataError otherwise.
    """
    path = Path(path)
    digest = sha256_file(path)
    if digest == expected.sha256:
        return "sha256"
    if expected.payload_sha256:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        try:
            payload = gzip.open(path).read() if gz else path.read_bytes()
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: corrupt gzip file ({exc})") from exc
        if hashlib.sha256(payload).hexdigest() == expected.payload_sha256:
            return "payload-sha256"
    raise DataError(
        f"{path}: SHA-256 mismatch: expected {expected.sha256} (the official {expected.name}), "
        f"found {digest}"
    )


def _urlopen(url: str, timeout: float) -> BinaryIO:
    """Open ``url`` for reading (patched in tests)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - fixed official URLs


def _progress(total: int | None, desc: str) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but stay usable without it
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=None, leave=False)


def download_file(url: str, dest: str | os.PathLike[str], sha256: str,
                  opener: Callable[[str, float], BinaryIO] | None = None) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, check its SHA-256, write atomically.

    The data goes to a temporary file beside ``dest`` and replaces ``dest`` only when the
    digest matches; on any failure nothing is left behind. Network errors propagate as
    ``urllib.error.URLError``/``OSError``; a digest mismatch raises DataError.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, (opener or _urlopen)(url, TIMEOUT_S) as resp:
            length = getattr(resp, "headers", {}).get("Content-Length")
            bar = _progress(int(length) if length else None, dest.name)
            try:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    out.write(chunk)
                    h.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != sha256:
            raise DataError(
                f"{url}: SHA-256 mismatch: expected {sha256}, downloaded {h.hexdigest()}; "
                "the file was discarded"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch(name: str, data_dir: str | os.PathLike[str] | None = None,
          download: bool = True) -> list[Path]:
    """Return local paths of dataset ``name``'s files, downloading them into the cache if needed.

    Raises DataError, listing the files and the folders searched, when they are absent and
    cannot be downloaded (``download=False``, offline, or a digest mismatch).
    """
    src = _source(name)
    found = find_files(name, data_dir)
    if found:
        return found
    target = cache_dir() / src.folders[0]
    reason = "download=False"
    if download:
        paths: list[Path] = []
        for f in src.files:
            dest = target / f.name
            if dest.is_file():
                paths.append(dest)
                continue
            errors = []
            for mirror in src.mirrors:
                try:
                    paths.append(download_file(mirror + f.name, dest, f.sha256))
                    break
                except (urllib.error.URLError, OSError, DataError) as exc:
                    errors.append(f"{mirror + f.name}: {getattr(exc, 'reason', exc)}")
            else:
                reason = "download failed: " + "; ".join(errors)
                break
        else:
            return paths
    names = ", ".join(f.name for f in src.files)
    where = "\n  ".join(str(d) for d in search_dirs(name, data_dir))
    raise DataError(
        f"dataset {name!r} not found and not downloaded ({reason}).\n"
        f"Put {names} (from {src.homepage}) into one of these folders, searched in this order "
        f"(or set {ENV_VAR}=<folder> and use <folder>/{src.folders[0]}):\n  {where}"
    )

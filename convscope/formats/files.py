"""Files written whole or not at all (a leaf: imports nothing from convscope).

:func:`atomic_write` writes a temporary file next to the target and renames it over the target,
so a crash leaves the old file or the new one, never half of one.  Temporary files are named
``.<name>.<pid>-<random>.convscope-tmp`` (:data:`TEMP_SUFFIX`): one left behind by a process
that was killed (``kill -9``) is recognised by its name and its dead ``pid`` and removed by
:func:`clean_temp_files` (every run in that folder does) and by the next write of the same file.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import threading
from pathlib import Path

__all__ = ["atomic_write", "clean_temp_files", "same_file", "new_file_mode", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".convscope-tmp"
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[^.]+" + re.escape(TEMP_SUFFIX) + "$")
_UMASK_LOCK = threading.Lock()


def new_file_mode() -> int:
    """The permission bits a new file gets from ``open``: ``0o666 & ~umask``.

    mkstemp creates 0600 files; every file convscope writes is given this mode instead.
    """
    try:  # Linux: read the umask without changing it (os.umask would, for every thread)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def clean_temp_files(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` left in ``folder`` when its process died
    (of every target, or of target ``name`` only); a live process's files are kept.  Returns
    the paths removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m is None or (name is not None and m["name"] != name[:180]) or _pid_alive(int(m["pid"])):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether paths ``a`` and ``b`` name the same file (links and ``..`` resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return Path(a).resolve() == Path(b).resolve()


def _user_error(exc: OSError, path: Path) -> OSError:
    """``exc`` (about a temporary file, maybe) as the same error about the user's ``path``."""
    code = exc.errno
    strerror = exc.strerror or str(exc) or os.strerror(code or errno.EIO)
    if code == errno.ENOSPC:
        strerror = "no space left on the device; nothing was written (free some space)"
    return OSError(code, strerror, str(path))  # OSError(errno, ...) makes the subclass


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` atomically; return the path.

    A temporary file in the same folder is flushed to disk, then ``os.replace``d over the
    target.  Missing parent folders are created.  A new file gets ``0o666 & ~umask``; a file
    replaced keeps its permission bits.  Errors (a folder at ``path``, a full disk, no
    permission) are :class:`OSError` naming ``path``, with no temporary file left behind.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; give a file name", str(path))
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _user_error(exc, Path(exc.filename or path.parent)) from None
    clean_temp_files(path.parent, path.name)  # a killed process's leftovers of this file
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = new_file_mode()
    prefix = f".{path.name[:180]}.{os.getpid()}-"
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=TEMP_SUFFIX)
    except OSError as exc:
        raise _user_error(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _user_error(exc, path) from None
        raise
    return path

"""What makes a folder a convscope run, the run lock, and which folders a new run may use.

A run folder is what ``convscope train`` writes (:data:`RUN_FILES`).  It is *a convscope run*
when it holds the lock file :data:`LOCK` or a ``config.json`` with ``"settings"`` (runs made
before the lock file existed).  A new run may use a folder that does not exist, an empty one, or
a run that stopped before its first checkpoint (nothing trained: the retry starts it over); it
is refused a folder of other files, and a folder holding a checkpoint or a trained model
(continue that one with ``--resume``).

The run lock is an OS lock (``fcntl.flock``) on :data:`LOCK`, held while a run uses the folder:
a second run there is refused at once.  The kernel releases it when the process ends, however
it ends (``kill -9`` too), so a lock is never stale; the pid and start time written into the
file are only for the message.  Taking the lock also removes the temporary files of writes
that a killed process left (:func:`~convscope.formats.files.clean_temp_files`).

``convscope train --workers N`` holds the lock in the launching process and hands it down to
the MPI workers it starts (:meth:`RunLock.hand_down`: the environment variable
:data:`HANDED_DOWN` names the folder), which then do not take it again.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import struct
from pathlib import Path
from types import TracebackType

from ..errors import RunFolderError
from .files import TEMP_SUFFIX, clean_temp_files

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: runs are not locked there
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK", "HANDED_DOWN", "RUN_FILES", "folder_state", "check_new_run", "in_use",
           "RunLock", "lock_run", "convscope_kind"]

LOCK = ".convscope.lock"
HANDED_DOWN = "CONVSCOPE_RUN_LOCK_HELD"
#: The files ``convscope train`` (and ``report``, ``evaluate`` beside a model) write in a run.
RUN_FILES = ("config.json", "checkpoint.safetensors", "model.safetensors", "metrics.jsonl",
             "results.json", "report.html", "curves.png", "explore.html", LOCK)
_TRAINED = ("checkpoint.safetensors", "model.safetensors", "results.json")
#: In-process holds: resolved folder -> [file descriptor, depth] (flock is per open file, so
#: a second open in the same process would block on its own lock).
_HELD: dict[str, list[int]] = {}


def _is_run_config(path: Path) -> bool:
    try:
        return "settings" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def folder_state(folder: str | os.PathLike[str]) -> str:
    """What ``folder`` is to a new run: ``"missing"``, ``"file"`` (not a folder), ``"empty"``
    (nothing in it but convscope's lock and temporary files), ``"started"`` (a run that
    stopped before its first checkpoint), ``"trained"`` (a run with a checkpoint or a model)
    or ``"foreign"`` (other files)."""
    folder = Path(folder)
    if not folder.exists():
        return "missing"
    if not folder.is_dir():
        return "file"
    names = {p.name for p in folder.iterdir() if not p.name.endswith(TEMP_SUFFIX)}
    if not names - {LOCK}:
        return "empty"
    if LOCK not in names and not _is_run_config(folder / "config.json"):
        return "foreign"
    return "trained" if names & set(_TRAINED) else "started"


def check_new_run(folder: str | os.PathLike[str]) -> str:
    """The :func:`folder_state` of ``folder`` if a new run may write there, else
    :class:`RunFolderError` saying why and what to do instead."""
    state = folder_state(folder)
    busy = in_use(folder)
    if busy:
        raise RunFolderError(busy)
    if state == "file":
        raise RunFolderError(f"--out {folder}: is a file, not a folder; choose a folder name")
    if state == "foreign":
        raise RunFolderError(f"--out {folder}: the folder holds other files and is not a "
                             "convscope run; choose a new or empty folder")
    if state == "trained":
        raise RunFolderError(f"{folder} already holds a run; continue it with --resume {folder} "
                             "or choose another --out")
    return state


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f" (pid {int(info['pid'])}, since {info['started']})"
    except (OSError, ValueError, TypeError, KeyError):
        return ""


def in_use(folder: str | os.PathLike[str]) -> str | None:
    """Why ``folder`` is in use by another process's run (its run lock is held), else None."""
    path, key = Path(folder) / LOCK, str(Path(folder).resolve())
    if fcntl is None or not path.is_file() or key in _HELD or os.environ.get(HANDED_DOWN) == key:
        return None  # not locked, or by this process, or by the one that started this one
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return f"{folder} is in use by another convscope run{_holder(path)}; wait for it to end"
    finally:
        os.close(fd)
    return None


class RunLock:
    """The run lock of ``folder`` (created if missing): ``with RunLock(folder): ...``.

    Raises :class:`RunFolderError` at once when another process holds it.  Re-entrant within
    a process (the command and its Trainer both take it).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self._key: str | None = None

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        key = str(self.folder.resolve())
        if os.environ.get(HANDED_DOWN) == key:  # the launching process holds it for us
            return self
        if key in _HELD:
            _HELD[key][1] += 1
            self._key = key
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunFolderError(f"{self.folder} is in use by another convscope run"
                                     f"{_holder(self.path)}; wait for it to end") from None
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "started": stamp}).encode() + b"\n")
        _HELD[key] = [fd, 1]
        self._key = key
        clean_temp_files(self.folder)  # what a killed run left half-written
        return self

    def hand_down(self) -> None:
        """Let the processes this one starts (the MPI workers) use the folder it holds."""
        if self._key is not None:
            os.environ[HANDED_DOWN] = self._key

    def release(self) -> None:
        if self._key is None:
            return
        if os.environ.get(HANDED_DOWN) == self._key:
            del os.environ[HANDED_DOWN]
        held = _HELD[self._key]
        held[1] -= 1
        if held[1] == 0:
            del _HELD[self._key]
            os.close(held[0])  # closing the file releases the flock
        self._key = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def lock_run(folder: str | os.PathLike[str]) -> RunLock:
    """:class:`RunLock` of ``folder``, acquired (release it, or use ``with``)."""
    return RunLock(folder).acquire()


def convscope_kind(path: str | os.PathLike[str]) -> str | None:
    """``"convscope.model"`` or ``"convscope.checkpoint"`` when ``path`` is a file of that
    format (from its header alone, at most 1 MB read), else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None
            (n,) = struct.unpack("<Q", head)
            if n > 1 << 20:
                return None
            header = json.loads(f.read(n).decode("utf-8"))
        fmt = header["__metadata__"]["format"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return fmt if fmt in ("convscope.model", "convscope.checkpoint") else None


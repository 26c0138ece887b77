"""Where the commands write: never over one of their inputs, never over a model file that is
not theirs to replace, a run folder only while holding its lock (formats/run_folder.py)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterable

from ..errors import RunFolderError
from ..formats.files import same_file
from ..formats.run_folder import LOCK, RunLock, check_new_run, convscope_kind
from ._common import CommandError

__all__ = ["check_output", "new_run_check", "claim_run_folder", "interrupted_line"]


def check_output(out: str | os.PathLike[str], flag: str, inputs: Iterable[Any] = (),
                 keep_models: bool = True) -> None:
    """Refuse (:class:`CommandError`, one line) to write ``out`` (given as ``flag``) when it
    is one of the command's ``inputs`` (the same file by any path), and, with
    ``keep_models``, when it already is a convscope model file or checkpoint."""
    for item in inputs:
        if item is not None and Path(item).exists() and same_file(out, item):
            raise CommandError(f"{flag} {out}: that is the input {item}; writing there would "
                               "destroy it: choose another file name")
    if keep_models:
        kind = convscope_kind(out) if Path(out).is_file() else None
        if kind is not None:
            what = "training checkpoint" if kind.endswith("checkpoint") else "model file"
            raise CommandError(f"{flag} {out}: that is a convscope {what}; not overwritten: "
                               "choose another file name")


def new_run_check(run_dir: Path) -> str:
    """:func:`~convscope.formats.run_folder.check_new_run` as a :class:`CommandError`."""
    try:
        return check_new_run(run_dir)
    except RunFolderError as exc:
        raise _for_train(exc) from None


def _for_train(exc: RunFolderError) -> CommandError:
    more = " or choose another --out" if "in use" in str(exc) else ""
    return CommandError(f"{exc}{more}")


def claim_run_folder(held: contextlib.ExitStack, run_dir: Path, resuming: bool,
                     hand_down: bool = False) -> str | None:
    """Take ``run_dir``'s run lock for the rest of the command (``held``) and check, under the
    lock, that a new run may use it.  Returns its state ("started": a run that stopped before
    its first checkpoint, which this one starts over).  ``hand_down``: for the MPI workers
    this process starts."""
    try:
        state = None if resuming else check_new_run(run_dir)  # before the lock file is made
        lock = held.enter_context(RunLock(run_dir))
        if state == "missing":  # a run that fails before writing anything leaves no folder
            held.callback(_remove_if_unused, run_dir)
        if not resuming:
            state = check_new_run(run_dir)  # again: another run may have started meanwhile
        if hand_down:
            lock.hand_down()
    except RunFolderError as exc:
        raise _for_train(exc) from None
    return state


def _remove_if_unused(run_dir: Path) -> None:
    """Remove the folder this command made, if it holds nothing but the lock (still held)."""
    try:
        if [p.name for p in run_dir.iterdir()] == [LOCK]:
            (run_dir / LOCK).unlink()
            run_dir.rmdir()
    except OSError:
        pass


def interrupted_line(trainer: Any, run_dir: Path) -> str:
    """What an interrupted run says: where its checkpoint is, only if one was written."""
    at = (trainer.epoch, trainer.batch)
    saved = getattr(trainer, "saved_at", None)
    resume = f"continue with: convscope train --resume {run_dir}"

    def where(epoch: int, batch: int) -> str:
        return f"at batch {batch} of epoch {epoch + 1}" if batch else f"after epoch {epoch}"

    if saved == at:
        return f"interrupted; checkpoint saved {where(*at)}; {resume}"
    if saved is not None:
        return (f"interrupted at once: no checkpoint of this point; the last one ({where(*saved)}) "
                f"is kept; {resume}")
    if (run_dir / "checkpoint.safetensors").is_file():
        return f"interrupted at once: the checkpoint written before is kept; {resume}"
    return ("interrupted at once, before the first checkpoint: nothing saved; start it over "
            f"with: convscope train --resume {run_dir}")

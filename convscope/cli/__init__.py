"""The ``convscope`` command: train, evaluate, predict, summary, explain, shapes, viz, report,
export, and the subcommands others add.

Each subcommand is a module of this package (or any object) with ``add_parser(subparsers) ->
argparse.ArgumentParser`` and ``run(args) -> int | None``; what several share is in
``_common.py`` (commands import it, never this module).  To add one, write
``convscope/cli/<yours>.py`` with those two functions and add a line to :data:`SUBCOMMANDS` (and
its one-line help to :data:`HELP`).  ``main`` imports only the module of the command it runs, so
``convscope predict`` starts without loading what training or the pictures need.  Errors print
one line (``convscope <command>: error: ...``) and exit 1; ``--debug`` shows the traceback
instead.  ``--import FILE`` runs a user's file first (their own layers).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, Callable, Sequence

from .._version import __version__
from ._common import (Command, CommandError, Formatter, add_limits, add_threads, apply_limits,
                      import_user_code, one_line, say, thread_limit)

__all__ = ["main", "build_parser", "SUBCOMMANDS", "HELP", "Command", "CommandError"]

#: (name, "module" or "module:attribute") of each subcommand, in the order ``--help`` lists them.
SUBCOMMANDS: list[tuple[str, str]] = [
    ("train", "convscope.cli.train"),
    ("evaluate", "convscope.cli.evaluate"),
    ("predict", "convscope.cli.predict"),
    ("summary", "convscope.cli.summary"),
    ("explain", "convscope.cli.explain"),
    ("shapes", "convscope.cli.shapes"),
    ("viz", "convscope.cli.viz"),
    ("report", "convscope.cli.report"),
    ("export", "convscope.cli.export"),
    ("explore", "convscope.cli.explore"),
    ("serve", "convscope.cli.serve"),
]

#: Each subcommand's line in ``convscope --help`` (the same as its parser's ``help=``, which a
#: test checks), so that listing the commands imports none of them.  A command missing here is
#: imported for ``--help``.
HELP: dict[str, str] = {
    "train": "train an image classifier",
    "evaluate": "accuracy, per-class accuracy, confusion matrix",
    "predict": "label image files with a trained model",
    "summary": "the model table: shapes, parameters, mult-adds",
    "explain": "the lecture's arithmetic, layer by layer",
    "shapes": "output size for bare numbers: N, F, S, P",
    "viz": "pictures: filters, activation maps, curves",
    "report": "(re)write a run's report.html",
    "export": "write a model as ONNX or as a PyTorch state dict",
    "explore": "write the interactive explorer of a model (one offline HTML file)",
    "serve": "serve the explorer locally: drop or draw an image, see every layer",
}

# the old names of this module, each loaded with its command's module on first use
_OLD_COMMANDS = {"TRAIN": "train", "EVALUATE": "evaluate", "PREDICT": "predict",
                 "SUMMARY": "summary"}
_OLD_NAMES = {"parse_augment": "train", "atomic_write_settings": "train",
              "TRAIN_DEFAULTS": "train", "DEFAULT_LR": "train", "AUTO_AUGMENT": "train",
              "format_confusion": "evaluate", "write_confusion_png": "evaluate"}
# and the helpers that moved to _common
_Formatter, _say, _add_threads, _thread_limit, _one_line = (Formatter, say, add_threads,
                                                            thread_limit, one_line)


def __getattr__(name: str) -> Any:
    if name in _OLD_COMMANDS:
        module = importlib.import_module(f"{__name__}.{_OLD_COMMANDS[name]}")
        return Command(module.add_parser, module.run)
    if name in _OLD_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_OLD_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``convscope`` parser with every subcommand of :data:`SUBCOMMANDS`.

    ``only``: build that command's parser in full and the others as their one-line help
    (:data:`HELP`) without importing them; ``""``: none in full (``convscope --help``).
    """
    parser = argparse.ArgumentParser(
        prog="convscope", formatter_class=Formatter,
        description="ConvNets from scratch on NumPy: train, evaluate and inspect image "
        "classifiers.",
        epilog="main job:  convscope train   (lenet5 on the bundled digits: about 98% in under a minute)\n"
        "then:      convscope predict runs/<run>/model.safetensors your_digit.png\n"
        "Run 'convscope <command> --help' for each command's options.")
    parser.add_argument("--version", action="version", version=f"convscope {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, target in SUBCOMMANDS:
        if only is not None and name != only and name in HELP:
            sub.add_parser(name, help=HELP[name])  # never run: main builds the one it runs
            continue
        try:
            obj = _resolve(target)
        except ImportError as exc:
            broken = sub.add_parser(name, help=f"(unavailable: {exc})")
            broken.set_defaults(run=_unavailable(name, exc))
            continue
        p = obj.add_parser(sub)
        p.set_defaults(run=obj.run)
        add_limits(p)
        if not any("--debug" in a.option_strings for a in p._actions):
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                           help="show the traceback on errors")
    return parser


def _unavailable(name: str, exc: Exception) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise CommandError(f"{name} is unavailable: {exc}")

    return run


def _command_in(argv: Sequence[str]) -> str:
    """The subcommand ``argv`` names ("" for none or an unknown one): the first word that is
    not an option (the top-level options take no values)."""
    word = next((a for a in argv if not a.startswith("-")), "")
    return word if any(word == name for name, _ in SUBCOMMANDS) else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``convscope`` command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_command_in(argv))
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        apply_limits(args)
        import_user_code(getattr(args, "imports", None) or ())  # their layers, before all else
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        say(f"convscope {args.command}: interrupted")
        return 130
    except BrokenPipeError:  # e.g. `convscope predict ... | head -1`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stop the flush at exit failing
        except OSError:
            pass
        return 0
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into a line
        if args.debug:
            raise
        say(f"convscope {args.command}: error: {one_line(exc)}")
        return 1


if __name__ == "__main__":  # pragma: no cover - `python -m convscope.cli`
    from convscope.cli import main as _main  # the module the subcommands import, not __main__

    sys.exit(_main())

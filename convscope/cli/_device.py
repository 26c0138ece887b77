"""``--device cpu|cuda|cuda:N`` for train, evaluate and predict: where the model computes.

Checked when the command line is read (CuPy and a GPU are looked for only when a GPU is asked
for), so a bad value is one line before any data loads.  Under MPI each worker takes the GPU of
its local rank (``cuda``), see :func:`convscope.runtime.get_device`.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..runtime import get_device

__all__ = ["add_device", "device_name"]

HELP = ("where the model computes: cpu, or cuda (an NVIDIA GPU through CuPy: pip install "
        "'convscope[gpu]'; under MPI each worker takes its local rank's GPU), or cuda:N "
        "(default: cpu)")


def device_name(value: str) -> str:
    """The device's name ("cpu", "cuda:0", ...), or argparse's error naming the value."""
    try:
        return get_device(value).name
    except (ValueError, ImportError, RuntimeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_device(group: Any) -> None:
    """The --device option (default "cpu") on a parser or argument group."""
    group.add_argument("--device", type=device_name, default="cpu", metavar="cpu|cuda", help=HELP)

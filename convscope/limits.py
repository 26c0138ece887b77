"""The documented limits: how much memory a file can make convscope allocate, and how to raise them.

Every reader works out what a file declares (tensor shapes, an IDX header's dimensions, an
image's pixels, an architecture's parameters and activations) from the file's header and
checks it against the file's actual bytes and against :data:`LIMITS` *before* it allocates
anything; a refusal is one line naming the value, the limit and the override.  What a file can
make convscope allocate, at most:

====================================  =========================================================
model file (``.safetensors``)         about 2× its size: the tensors once, read straight into
                                      their arrays, and their gradients (zeros); the header's
                                      JSON at most ``max_json_bytes``; the activations its
                                      architecture needs at most ``max_activation_bytes`` per
                                      image (``predict`` batches images to stay under it)
IDX file, gzipped or not; CIFAR       1× the size its header declares (2× for a CIFAR batch: the
                                      bytes, then the images), which must fit the file:
batch; a member of CIFAR's archive    exactly for a plain file, at most deflate's 1032:1 for a
                                      gzipped one (read up to the declared size and one byte
                                      more, never further); at most ``max_decoded_bytes``
JSON architecture                     its text (at most ``max_json_bytes``), parsed; built: at
                                      most ``max_params`` parameters and
                                      ``max_activation_bytes`` per image (``summary`` and
                                      ``explain`` allocate no weights at all)
image                                 at most ``max_pixels`` pixels decoded (JPEGs are decoded
                                      at a reduced scale when the target is smaller), a few
                                      bytes per pixel
====================================  =========================================================

plus what the user asks for with flags (batch size, ``--input-size``, ...).  Python's JSON
parser takes up to about 20× the text's size for a list of empty lists, hence the JSON bound.

Each limit is overridden, in this order, by :func:`set_limit` (the command line's flag, such
as ``--max-params 200000000``), then by its environment variable (``CONVSCOPE_MAX_PARAMS``),
else its default.  This module imports nothing from convscope.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

__all__ = ["Limit", "LIMITS", "limit", "set_limit", "reset_limits", "exceeds", "check",
           "describe", "option_names"]


@dataclass(frozen=True)
class Limit:
    """One documented limit: its ``name``, ``default`` value, what it ``bounds``, the
    environment variable ``env`` and the command-line ``flag`` that override it."""

    name: str
    default: int
    bounds: str
    env: str
    flag: str

    @property
    def dest(self) -> str:
        """The flag's argparse destination (``--max-params`` -> ``max_params``)."""
        return self.flag.lstrip("-").replace("-", "_")


def _limit(name: str, default: int, bounds: str) -> Limit:
    return Limit(name, default, bounds, f"CONVSCOPE_{name.upper()}",
                 "--" + name.replace("_", "-"))


#: The table: name -> :class:`Limit`.
LIMITS: dict[str, Limit] = {lim.name: lim for lim in (
    _limit("max_params", 50_000_000,
           "parameters of an architecture built to train or run (a JSON file or a preset)"),
    _limit("max_activation_bytes", 256 * 2 ** 20,
           "bytes of activations per image (the input and every layer's output) of a model "
           "built or loaded; predict batches images to stay under it"),
    _limit("max_pixels", 50_000_000,
           "pixels (width × height) of an image decoded, or of a model's input"),
    _limit("max_decoded_bytes", 512 * 2 ** 20,
           "bytes one data file decodes to: an IDX file (gzipped or not), a CIFAR batch or a "
           "member of CIFAR's archive"),
    _limit("max_json_bytes", 4 * 2 ** 20,
           "bytes of JSON read from one file: an architecture file or a model file's header"),
    _limit("max_lines", 32,
           "lines `convscope shapes` prints for the strides 1..F (give --stride S for one)"),
)}

_set: dict[str, int] = {}


def _known(name: str) -> Limit:
    try:
        return LIMITS[name]
    except KeyError:
        raise KeyError(f"no limit named {name!r}; the limits are {', '.join(LIMITS)}") from None


def limit(name: str) -> int:
    """The value of limit ``name`` now: set by :func:`set_limit`, else its environment
    variable, else its default.  A malformed environment variable is a ValueError naming it."""
    lim = _known(name)
    if name in _set:
        return _set[name]
    text = os.environ.get(lim.env)
    if text is None or not text.strip():
        return lim.default
    try:
        value = int(text.replace("_", "").strip())
    except ValueError:
        value = -1
    if value < 1:
        raise ValueError(f"{lim.env}={text!r}: must be a whole number >= 1 ({lim.bounds}; "
                         f"default {lim.default:,})")
    return value


def set_limit(name: str, value: int | None) -> None:
    """Override limit ``name`` for this process (None: back to the environment or default)."""
    lim = _known(name)
    if value is None:
        _set.pop(name, None)
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{lim.flag} must be a whole number >= 1, got {value!r}")
    _set[name] = value


def reset_limits() -> None:
    """Forget every :func:`set_limit` override."""
    _set.clear()


def _amount(name: str, value: int) -> str:
    if name.endswith("_bytes"):
        for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
            if value >= size:
                return f"{value / size:,.1f} {unit}".replace(".0 ", " ")
        return f"{value:,} bytes"
    return f"{value:,}"


def exceeds(name: str, value: int, what: str) -> str | None:
    """The one-line refusal when ``value`` (what ``what`` needs) is over limit ``name``, else
    None: '<what> is <value>, over the limit max_params = 50,000,000; raise it with
    --max-params N or CONVSCOPE_MAX_PARAMS=N'."""
    cap = limit(name)
    if value <= cap:
        return None
    lim = LIMITS[name]
    return (f"{what} is {_amount(name, value)}, over the limit {name} = {_amount(name, cap)}; "
            f"raise it with {lim.flag} N or {lim.env}=N")


def check(name: str, value: int, what: str, error: Callable[[str], Exception] = ValueError,
          prefix: str = "") -> None:
    """Raise ``error(prefix + refusal)`` when ``value`` is over limit ``name``."""
    msg = exceeds(name, value, what)
    if msg is not None:
        raise error(prefix + msg)


def describe() -> str:
    """The table as text: name, value now, default, flag and environment variable, bounds."""
    rows = [f"{lim.name} = {limit(lim.name):,} (default {lim.default:,}; {lim.flag} N, "
            f"{lim.env}=N): {lim.bounds}" for lim in LIMITS.values()]
    return "\n".join(rows)


def option_names() -> list[tuple[str, str, str]]:
    """(flag, destination, help) of each limit, for the command line's options."""
    return [(lim.flag, lim.dest, f"{lim.bounds} (default {lim.default:,}; also {lim.env})")
            for lim in LIMITS.values()]

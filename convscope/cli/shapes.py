"""``convscope shapes``: the lecture's question for bare numbers: an N×N input, an F×F filter,
stride S and padding P give an output side of (N − F + 2P) / S + 1 (``convscope explain
--input N --filter F`` asks it too)."""

from __future__ import annotations

import argparse
import re
from typing import Any

from .. import limits
from ..inspect.explain import explain_size
from ._common import CommandError, Formatter

__all__ = ["add_parser", "run", "size_options", "size_answer"]


def size_options(p: argparse.ArgumentParser, required: bool) -> None:
    """--filter, --stride, --pad, --dilation (shapes; explain with a bare --input N)."""
    g = p.add_argument_group("bare numbers (the lecture's question)")
    g.add_argument("--filter", "-F", type=int, metavar="F", required=required,
                   help="filter side F")
    g.add_argument("--stride", "-S", type=int, metavar="S",
                   help="stride S (default: list strides 1..F)")
    g.add_argument("--pad", "-P", metavar="P", default="0",
                   help="zero padding P on each side, or 'same' (default: 0)")
    g.add_argument("--dilation", type=int, default=1, metavar="D", help="dilation (default: 1)")


def size_answer(args: argparse.Namespace) -> int:
    """Print the output size for --input N --filter F (every stride 1..F without --stride)."""
    text = str(args.input or "").strip()
    if not re.fullmatch(r"\d+", text):
        raise CommandError(f"--input must be the input side N (a whole number) with --filter, "
                           f"got {args.input!r}")
    pad: int | str = args.pad
    if pad != "same":
        if not re.fullmatch(r"\d+", str(pad)):
            raise CommandError(f"--pad must be a whole number >= 0 or 'same', got {pad!r}")
        pad = int(pad)
    n, f, d = int(text), args.filter, args.dilation
    span = f if not isinstance(f, int) or not isinstance(d, int) or d < 1 else d * (f - 1) + 1
    cap = limits.limit("max_lines")
    if args.stride is not None or not isinstance(span, int) or span <= cap:
        answer = explain_size(n, f, args.stride, pad, d)
        print(answer)
        fits = answer.fits
    else:  # strides 1..F would be F lines: the first max_lines, then how many were left out
        fits = _print_first_strides(n, f, pad, d, span, cap)
    if args.strict and not fits:
        raise CommandError("a stride does not fit (see above)")
    return 0


def _print_first_strides(n: int, f: int, pad: int | str, d: int, span: int, cap: int) -> bool:
    """Strides 1..cap of the lecture's answer, a line saying how many more there are, and the
    answer's last lines; whether every stride 1..span fits (each checked in O(1))."""
    parts = [str(explain_size(n, f, s, pad, d)).split("\n") for s in range(1, cap + 1)]
    fits_shown = all(explain_size(n, f, s, pad, d).fits for s in (1, cap))
    print(parts[0][0])
    for lines in parts:
        print(lines[1])
    print(f"... strides {cap + 1} to {span} left out ({span - cap:,} lines; the limit max_lines "
          f"= {cap}, raise it with --max-lines N or CONVSCOPE_MAX_LINES=N); give --stride S for "
          "one of them")
    for line in parts[0][2:]:
        print(line)
    total = n + 2 * pad if isinstance(pad, int) else n + d * (f - 1)
    rest = total - span  # the positions a window can move: stride s fits when s divides it
    return fits_shown and all(rest % s == 0 for s in range(1, span + 1))



def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "shapes", formatter_class=Formatter, help="output size for bare numbers: N, F, S, P",
        description="The lecture's question: an N×N input, an F×F filter, stride S and zero "
        "padding P give an output side of (N − F + 2P) / S + 1.  Without --stride every stride "
        "1..F is listed.  A stride that does not fit is diagnosed: what is never seen, and the "
        "nearest strides and paddings that fit.",
        epilog="examples:\n  convscope shapes --input 7 --filter 3            # strides 1, 2, 3\n"
        "  convscope shapes --input 7 --filter 3 --stride 3 --strict\n"
        "  convscope shapes --input 32 --filter 5 --pad same")
    p.add_argument("--input", "-N", required=True, metavar="N", help="input side N")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when a stride does not fit")
    size_options(p, required=True)
    return p


run = size_answer

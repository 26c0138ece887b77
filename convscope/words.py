"""The lecture's words for shapes, sizes and sliding windows, shared by the layers' ``explain``
hooks and by ``convscope.inspect`` (explain, summary, viz, report).

A leaf: it imports only :mod:`convscope.shapes` and :mod:`convscope.errors`, so a layer file can
import it without pulling in ``inspect``.  Every number comes from :mod:`convscope.shapes`;
nothing here recomputes the size formula (N − F + 2P) / S + 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from . import shapes as S
from .errors import ShapeError

__all__ = ["volume", "nbytes_text", "minus", "plural", "last", "stride_words", "Axis", "axes",
           "square", "pad_words", "same_words", "formula_words", "fit_words", "AXIS_NAMES"]


# ---------------------------------------------------------------------------------------------
# words and numbers


def volume(shape: Sequence[int]) -> str:
    """A per-image shape as the lecture writes it: (C, H, W) -> 'H×W×C'; (F,) -> 'F' ('1,440')."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        c, h, w = shape
        return f"{h}×{w}×{c}"
    if len(shape) == 1:
        return f"{shape[0]:,}"
    return "×".join(str(s) for s in shape)


def nbytes_text(n: float) -> str:
    """1234567 -> '1.2 MiB'; under 1 KiB in whole bytes ('96 B')."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def minus(formula: str) -> str:
    """The lecture's typography: a true minus sign in formulas from :mod:`convscope.shapes`."""
    return formula.replace(" - ", " − ")


def plural(n: int, word: str) -> str:
    """(1, 'filter') -> '1 filter'; (6, 'filter') -> '6 filters'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def last(n: int, word: str) -> str:
    """(1, 'row') -> 'the last row'; (2, 'row') -> 'the last 2 rows'."""
    return f"the last {word}" if n == 1 else f"the last {n} {word}s"


def stride_words(stride: tuple[int, int]) -> str:
    """(2, 2) -> '2'; (1, 2) -> '1×2' (height × width)."""
    return str(stride[1]) if stride[0] == stride[1] else f"{stride[0]}×{stride[1]}"


# ---------------------------------------------------------------------------------------------
# one window axis (conv or pool) in words


@dataclass(frozen=True)
class Axis:
    """One axis of a sliding window: input side ``n``, filter ``k``, stride ``s``, padding ``p``
    (before, after), dilation ``d``; ``word`` is 'row' (height) or 'column' (width)."""

    n: int
    k: int
    s: int
    p: tuple[int, int]
    d: int
    ceil: bool
    word: str

    @property
    def formula(self) -> str:
        """'(32 − 5 + 2·0) / 1 + 1 = 28'."""
        return minus(S.size_formula(self.n, self.k, self.s, self.p, self.d, always_pad=True))

    @property
    def out(self) -> int:
        """The output side, floored (or ceiled with ceil_mode) as PyTorch does."""
        return S.conv_output_size(self.n, self.k, self.s, self.p, self.d, "floor", self.ceil)

    @property
    def exact(self) -> bool:
        """Whether (N − F + 2P) / S + 1 is a whole number."""
        try:
            S.conv_output_size(self.n, self.k, self.s, self.p, self.d, "error")
        except ShapeError:
            return False
        return True

    @property
    def unseen(self) -> int:
        """Input cells at the end that no window reaches (0 with ceil_mode)."""
        return 0 if self.ceil else S.unseen(self.n, self.k, self.s, self.p, self.d)

    @property
    def gap(self) -> int:
        """Input cells between two windows when the stride is longer than the filter."""
        return max(0, self.s - S.effective_kernel(self.k, self.d))


def axes(layer: Any, h: int, w: int) -> tuple[Axis, Axis]:
    """(height, width) axes of a windowed layer on an h × w input; reads its ``kernel_size``,
    ``stride``, ``pads``, ``dilation`` and ``ceil_mode`` (False when absent)."""
    ceil = bool(getattr(layer, "ceil_mode", False))
    return (Axis(h, layer.kernel_size[0], layer.stride[0], layer.pads[0], layer.dilation[0], ceil,
                 "row"),
            Axis(w, layer.kernel_size[1], layer.stride[1], layer.pads[1], layer.dilation[1], ceil,
                 "column"))


def square(ah: Axis, aw: Axis) -> bool:
    """Whether both axes have the same numbers (one formula says it for both)."""
    return (ah.n, ah.k, ah.s, ah.p, ah.d) == (aw.n, aw.k, aw.s, aw.p, aw.d)


def pad_words(pads: tuple[tuple[int, int], tuple[int, int]], mode: str = "zeros") -> str:
    """((1, 1), (1, 1)) -> 'pad 1'; other than zeros the mode follows: 'pad 1 (reflect)'."""
    (t, b), (l, r) = pads
    if t == b == l == r:
        text = f"pad {t}"
    elif t == b and l == r:
        text = f"pad {t} (rows), {l} (columns)"
    else:
        text = f"pad top {t}, bottom {b}, left {l}, right {r}"
    return text + ("" if mode == "zeros" or pads == ((0, 0), (0, 0)) else f" ({mode})")


def same_words(ah: Axis, aw: Axis) -> str:
    """' (same: P = (F − 1) / 2 = (5 − 1) / 2 = 2 keeps 32×32)' where the padding keeps the size,
    else ''."""
    keeps = all(a.s == 1 and a.p == S.same_padding(a.k, a.d) and a.p != (0, 0) for a in (ah, aw))
    if not keeps:
        return ""
    if (ah.k, ah.d) == (aw.k, aw.d):
        return f" (same: {minus(S.same_padding_formula(aw.k, aw.d))} keeps {ah.n}×{aw.n})"
    return (f" (same: height {minus(S.same_padding_formula(ah.k, ah.d))}, width "
            f"{minus(S.same_padding_formula(aw.k, aw.d))}, keeps {ah.n}×{aw.n})")


def formula_words(ah: Axis, aw: Axis) -> str:
    """The size formula, once when both axes agree, else 'height ..., width ...'."""
    if square(ah, aw):
        return aw.formula
    return f"height {ah.formula}, width {aw.formula}"


AXIS_NAMES = {"column": "width", "row": "height"}


def fit_words(ah: Axis, aw: Axis) -> tuple[str, bool]:
    """What a stride that does not fit drops, and what would fit; ('', True) when it fits."""
    bad = [a for a in (ah, aw) if not a.ceil and not a.exact]
    notes = []
    if bad:
        if square(ah, aw):
            which, lost_axes = f"stride {aw.s}", [aw, ah]
            fixes = S.fit_suggestions(aw.n, aw.k, aw.s, aw.p, aw.d)
        else:
            which = " and ".join(f"the {AXIS_NAMES[a.word]} stride {a.s}" for a in bad)
            lost_axes = bad
            fixes = "; ".join(f"{AXIS_NAMES[a.word]}: {S.fit_suggestions(a.n, a.k, a.s, a.p, a.d)}"
                              for a in bad)
        lost = [last(a.unseen, a.word) for a in lost_axes if a.unseen]
        if lost:
            verb = "is" if len(lost) == 1 and not lost[0].endswith("s") else "are"
            what = f"{' and '.join(lost)} of the input {verb} never seen"
        else:
            what = "only padding is left over, every input pixel is seen"
        notes.append(f"{which} does not fit: {what}; {fixes}")
    elif any(a.ceil and not a.exact for a in (aw, ah)):
        notes.append("ceil_mode keeps a last partial window")
    gaps = [a for a in (aw, ah) if a.gap]
    if gaps:
        a = gaps[0]
        notes.append(f"stride {a.s} is longer than the {S.effective_kernel(a.k, a.d)}-wide window: "
                     f"{plural(a.gap, a.word)} in every {a.s} "
                     f"{'lies' if a.gap == 1 else 'lie'} between windows, never seen")
    return "; ".join(notes), not bad

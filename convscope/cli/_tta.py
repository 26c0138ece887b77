"""``--tta none|flip`` for train, evaluate and predict: test-time augmentation, each image's class
probabilities averaged over its views (convscope.data.tta_views)."""

from __future__ import annotations

from typing import Any

from ..data import TTA

__all__ = ["add_tta"]


def add_tta(group: Any, what: str, default: str | None = "none") -> None:
    """``--tta``; ``what`` completes "flip ..." in the help (``default`` None: the command's
    settings fill it in)."""
    group.add_argument("--tta", choices=TTA, default=default,
                       help=f"test-time augmentation: flip {what}, each image's class "
                       "probabilities averaged with its mirror image's (the left-right flip that "
                       "--augment flip trains on: only for classes whose mirror image is the "
                       "same class, such as clothes, not digits) (default: none)")

"""Branches as layers: :class:`Residual` (y = block(x) + shortcut(x), He et al. 2015) and
:class:`Concat` (parallel branches joined along the channels, Szegedy et al. 2014).

Every branch is a :class:`~convscope.layers.container.Sequential` (a single layer or a list is
wrapped in one), so state-dict keys are PyTorch's for a module holding ``block`` / ``shortcut``
/ ``branches`` (an ``nn.ModuleList``): ``block.0.weight``, ``shortcut.1.running_mean``,
``branches.2.0.weight``.  The forward pass runs every branch on the same input; the backward
pass sends dy down every branch and sums what comes back where they met:
dx = d block + d shortcut (Residual), dx = Σ_k d branch_k with branch k getting its own
channels of dy (Concat).
"""

from __future__ import annotations

from .concat import Concat
from .residual import Residual

__all__ = ["Residual", "Concat"]

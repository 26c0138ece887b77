"""One layer dict of a JSON architecture as a kind's ``from_spec`` reads it (typed keys, errors
that name the entry): :class:`SpecReader`, used by formats/architecture.py."""

from __future__ import annotations

import json
from typing import Any, Sequence

from ..errors import ArchitectureError
from ..layers.base import Layer
from ..layers.registry import REGISTRY, Kind, lookup
from ..shapes import FITS

__all__ = ["SpecReader"]

Spec = dict[str, Any]


class SpecReader:
    """One layer dict as a kind's ``from_spec`` reads it: typed keys, errors that name the
    entry ("layer 3 ({...}): 'filters' must be an int >= 1, got 0").

    ``index`` is the entry's place ("3", or "3.1" inside a nested block), ``type`` its
    ``"type"`` as written (lower-case), ``kind`` the registered :class:`Kind` it names.
    """

    def __init__(self, index: str, spec: Spec, type_: str, kind: Kind | None) -> None:
        self.index, self.spec, self.type, self.kind = index, spec, type_, kind

    def error(self, msg: str) -> ArchitectureError:
        return ArchitectureError(f"layer {self.index} ({json.dumps(self.spec, default=repr)}): "
                                 f"{msg}")

    def has(self, name: str) -> bool:
        return name in self.spec

    def get(self, *names: str, default: Any = None) -> Any:
        """The first of ``names`` present (a key and its legacy spellings), else ``default``."""
        for n in names:
            if n in self.spec:
                return self.spec[n]
        return default

    def int(self, *names: str, default: Any = None, minimum: int = 1) -> int:
        v = self.get(*names, default=default)
        if v is None:
            raise self.error(f"'{names[0]}' is required")
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.error(f"'{names[0]}' must be an int >= {minimum}, got {v!r}")
        return v

    def pair(self, *names: str, default: Any = None, minimum: int = 1) -> int | tuple[int, int]:
        """An int or a pair [h, w] of ints, each >= ``minimum``."""
        v = self.get(*names, default=default)
        if v is None:
            raise self.error(f"'{names[0]}' is required")
        ok = (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(a, int) and not isinstance(a, bool) for a in v))
        if not ok or min(v if isinstance(v, (list, tuple)) else [v]) < minimum:
            raise self.error(f"'{names[0]}' must be an int >= {minimum} or a pair [h, w] of them, "
                             f"got {v!r}")
        return tuple(v) if isinstance(v, (list, tuple)) else v  # type: ignore[return-value]

    def size(self, default: Any = None) -> int | tuple[int, int]:
        """The window size: ``size`` (an int or [h, w]), or ConvNetJS' ``sx`` / ``sy``."""
        if "sy" in self.spec and ("sx" in self.spec or "size" in self.spec):
            return (self.int("sy"), self.int("sx", "size"))
        return self.pair("size", "sx", default=default)

    def bool(self, name: str, default: bool) -> bool:
        v = self.spec.get(name, default)
        if not isinstance(v, bool):
            raise self.error(f"'{name}' must be true or false, got {v!r}")
        return v

    def float(self, *names: str, default: float, low: float = 0.0, high: float = float("inf")
              ) -> float:
        v = self.get(*names, default=default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
            raise self.error(f"'{names[0]}' must be a number in [{low:g}, {high:g}], got {v!r}")
        return float(v)

    def choice(self, name: str, options: Sequence[str], default: str) -> str:
        v = self.spec.get(name, default)
        if v not in options:
            raise self.error(f"'{name}' must be one of {', '.join(map(repr, options))}, got {v!r}")
        return v

    def fit(self) -> str:
        """``fit``: "floor" (drop what a window cannot reach) or "error" (refuse)."""
        return self.choice("fit", FITS, "floor")

    def activation(self, ctx: Any) -> list[Layer]:
        """The layer an ``activation`` key names (none for absent, "none" or "linear"): any
        registered kind whose class has the ``elementwise`` trait."""
        act = self.spec.get("activation")
        if act in (None, "none", "linear"):
            return []
        names = [k.name for k in REGISTRY.values() if getattr(k.cls, "elementwise", False)]
        try:
            kind = lookup(act)
        except ArchitectureError:
            kind = None
        if kind is None or not getattr(kind.cls, "elementwise", False):
            raise self.error(f"'activation' must be one of {', '.join(names)} or none, "
                             f"got {act!r}")
        made = kind.cls.from_spec(SpecReader(self.index, {"type": act}, act, kind), ctx)
        return list(made) if isinstance(made, list) else [made]

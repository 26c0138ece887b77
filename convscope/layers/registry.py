"""The layer registry: each layer kind is declared once, and every format finds it here.

A kind is a :class:`~convscope.layers.base.Layer` subclass decorated where it is defined::

    @register_layer("conv", onnx_ops=("Conv",), torch=("Conv2d",))
    class Conv2D(Layer): ...

Everything a format needs to know about a kind lives on the class as hooks (``to_spec`` /
``from_spec`` for the JSON architecture, ``explain``, ``to_onnx`` / ``from_onnx``,
``to_torch`` / ``from_torch``, traits such as ``shows_filters``): see ``Layer``.  The formats
(architecture files, model files, ONNX, PyTorch), explain, summary, viz, report and the trainer
are loops over a model's layers and lookups here; every "supported: ..." message is joined from
:data:`REGISTRY`.  Registration stores strings only: no optional library is imported.

The subclass rule, the same everywhere: behaviour (the hooks) is inherited, but a file names a
kind, so only a registered class can be saved or exported.  A subclass of ``ReLU`` that is not
registered itself explains and trains as its parent does, and saving it is a clear error that says
to register it (saving it as ``relu`` would load as a different layer).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

from ..errors import ArchitectureError, UnsupportedLayer
from .base import Layer

__all__ = ["Kind", "REGISTRY", "register_layer", "kind_of", "require_kind", "lookup",
           "kinds_for_onnx_op", "kind_for_torch", "supported", "unregister"]

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class Kind:
    """One registered layer kind.

    ``name`` is its JSON ``"type"``; ``aliases`` other accepted spellings; ``onnx_ops`` the ONNX
    operators its ``from_onnx`` reads; ``torch`` the ``torch.nn`` class names its ``from_torch``
    reads (strings: registering imports no torch).
    """

    cls: type
    name: str
    aliases: tuple[str, ...] = ()
    onnx_ops: tuple[str, ...] = ()
    torch: tuple[str, ...] = ()


#: Kind name -> Kind, in registration order (the order "supported: ..." messages list them).
REGISTRY: dict[str, Kind] = {}
_BY_CLASS: dict[type, Kind] = {}
_ALIASES: dict[str, str] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_layer(name: str, *, aliases: Iterable[str] = (), onnx_ops: Iterable[str] = (),
                   torch: Iterable[str] = ()) -> Callable[[T], T]:
    """Class decorator: declare a Layer subclass as the kind ``name`` (its JSON ``"type"``).

    >>> @register_layer("swish")                                    # doctest: +SKIP
    ... class Swish(Layer): ...
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"register_layer: a kind name is lower-case letters, digits and _, "
                         f"starting with a letter, such as 'swish'; got {name!r}")
    aliases = tuple(a.lower() for a in aliases)

    def decorate(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise TypeError(f"register_layer({name!r}) decorates a convscope.Layer subclass, "
                            f"got {cls!r}")
        for word in (name, *aliases):
            owner = REGISTRY.get(word) or REGISTRY.get(_ALIASES.get(word, ""))
            if owner is not None and _qualname(owner.cls) != _qualname(cls):
                raise ValueError(f"register_layer: {word!r} is already the kind of "
                                 f"{_qualname(owner.cls)}; choose another name")
        old = _BY_CLASS.get(cls)
        if old is not None and old.name != name:
            raise ValueError(f"register_layer: {cls.__name__} is already registered as "
                             f"{old.name!r}")
        kind = Kind(cls, name, aliases, tuple(onnx_ops), tuple(torch))
        REGISTRY[name] = kind
        _BY_CLASS[cls] = kind
        for a in aliases:
            _ALIASES[a] = name
        cls.kind_name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def unregister(name: str) -> Kind:
    """Remove kind ``name`` and its aliases again (tests that register a throwaway kind);
    returns the Kind.  Unknown names are a KeyError naming the known ones."""
    if name not in REGISTRY:
        raise KeyError(f"unregister: no kind {name!r}; known: {', '.join(REGISTRY)}")
    kind = REGISTRY.pop(name)
    _BY_CLASS.pop(kind.cls, None)
    for a in kind.aliases:
        _ALIASES.pop(a, None)
    kind.cls.kind_name = None  # type: ignore[attr-defined]
    return kind


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def kind_of(layer: Any) -> Kind | None:
    """The kind registered for exactly this layer's class (or class), else None."""
    cls = layer if isinstance(layer, type) else type(layer)
    return _BY_CLASS.get(cls)


def require_kind(layer: Any, what: str = "saved") -> Kind:
    """The layer's kind, or :class:`UnsupportedLayer` saying how to register it."""
    kind = kind_of(layer)
    if kind is None:
        cls = layer if isinstance(layer, type) else type(layer)
        parent = next((k.name for c in cls.__mro__[1:] if (k := _BY_CLASS.get(c))), None)
        hint = (f" (it subclasses the {parent!r} kind, but a file must name its own kind)"
                if parent else "")
        raise UnsupportedLayer(f"{cls.__name__} is not a registered layer kind, so it cannot be "
                               f"{what}{hint}; decorate it with "
                               f"@convscope.register_layer({cls.__name__.lower()!r})")
    return kind


def lookup(name: Any) -> Kind:
    """The kind for a JSON ``"type"`` (or an alias), case-insensitive; else ArchitectureError
    listing the known types, with a did-you-mean."""
    key = name.lower() if isinstance(name, str) else None
    key = _ALIASES.get(key, key) if key is not None else None
    if key in REGISTRY:
        return REGISTRY[key]
    close = difflib.get_close_matches(str(name).lower(), list(REGISTRY) + list(_ALIASES), n=1,
                                      cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ArchitectureError(f"unknown layer type {name!r}{hint}; known types: "
                            f"{', '.join(REGISTRY)}")


def kinds_for_onnx_op(op: str) -> list[Kind]:
    """Every kind whose ``from_onnx`` reads ONNX operator ``op`` (registration order)."""
    return [k for k in REGISTRY.values() if op in k.onnx_ops]


def kind_for_torch(module: Any) -> Kind | None:
    """The kind that reads this ``torch.nn`` module, by its class name (walking its MRO)."""
    for c in type(module).__mro__:
        for k in REGISTRY.values():
            if c.__name__ in k.torch:
                return k
    return None


def supported(what: str) -> str:
    """The kinds (``"json"``), ONNX operators (``"onnx"``) or torch modules (``"torch"``) that
    convscope reads, comma-joined, for "supported: ..." messages."""
    if what == "json":
        return ", ".join(REGISTRY)
    if what == "onnx":
        return ", ".join(dict.fromkeys(op for k in REGISTRY.values() for op in k.onnx_ops))
    if what == "torch":
        return ", ".join(dict.fromkeys(t for k in REGISTRY.values() for t in k.torch))
    raise ValueError(f"supported: 'json', 'onnx' or 'torch', got {what!r}")

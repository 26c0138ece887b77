"""A fake GPU on the CPU (../shared/scale.md §6): arrays that refuse to meet host arrays, as
CuPy's do, so a test can prove that the engine keeps every array on the device.

``FakeDeviceArray`` is an ``np.ndarray`` subclass whose ``__array_ufunc__``,
``__array_function__`` and ``__setitem__`` raise :class:`HostArrayError` when a plain
``np.ndarray`` meets it (CuPy: "Unsupported type <class 'numpy.ndarray'>").  ``NAMESPACE``
is NumPy's functions with their array results made device arrays (``xp.zeros`` allocates on the
device); ``xp.asarray(host)`` is a host→device copy, allowed but counted in :data:`TRANSFERS`,
as are ``Device.from_host``/``to_host``.  ``register()`` makes it the device "fake" of
``convscope.runtime``: ``xp_of(fake_array)`` is ``NAMESPACE``, ``model.to("fake")`` moves there.

What it misses: ``np.asarray(device_array)`` silently makes a host view (CuPy raises); the lint
of test_no_numpy_calls.py looks for those calls instead.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

from convscope import runtime

#: ("h2d" | "d2h", what, shape) of every copy between host and the fake device.
TRANSFERS: list[tuple[str, str, tuple[int, ...]]] = []


class HostArrayError(TypeError):
    """A host array met a device array (CuPy raises TypeError here)."""


def _host_arrays(obj: Any) -> list[np.ndarray]:
    if type(obj) is np.ndarray:
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [a for item in obj for a in _host_arrays(item)]
    if isinstance(obj, dict):
        return [a for item in obj.values() for a in _host_arrays(item)]
    return []


def _refuse(obj: Any, what: str) -> None:
    found = _host_arrays(obj)
    if found:
        raise HostArrayError(f"{what}: a host numpy array of shape {found[0].shape} met a device "
                             "array; CuPy refuses this (move it with xp.asarray, or allocate it "
                             "with xp_of(x))")


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, FakeDeviceArray):
        return obj.view(np.ndarray)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def wrap(obj: Any) -> Any:
    """Array results as device arrays (tuples and lists of them too)."""
    if type(obj) is np.ndarray:
        return obj.view(FakeDeviceArray)
    if isinstance(obj, (list, tuple)) and any(type(o) is np.ndarray for o in obj):
        return type(obj)(wrap(o) for o in obj)
    return obj


class FakeDeviceArray(np.ndarray):
    """An array "on the device": operations with host arrays raise (see the module)."""

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        _refuse((inputs, kwargs), f"np.{ufunc.__name__}{'' if method == '__call__' else '.' + method}")
        out = kwargs.get("out")
        result = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        if out is not None:
            return out[0] if len(out) == 1 else out
        return wrap(result)

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        _refuse((args, kwargs), f"np.{func.__name__}")
        return wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    def __setitem__(self, key: Any, value: Any) -> None:
        _refuse((key, value), "device_array[...] = value")
        np.ndarray.__setitem__(self.view(np.ndarray), _unwrap(key), _unwrap(value))


def to_fake(host: Any, what: str = "from_host") -> FakeDeviceArray:
    """A host→device copy, counted."""
    a = np.array(host, copy=True)
    TRANSFERS.append(("h2d", what, tuple(a.shape)))
    return a.view(FakeDeviceArray)


def to_host(a: Any) -> np.ndarray:
    """A device→host copy, counted."""
    TRANSFERS.append(("d2h", "to_host", tuple(np.shape(a))))
    return np.array(a.view(np.ndarray), copy=True)


def _converter(name: str) -> Any:
    fn = getattr(np, name)

    def convert(a: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(a, FakeDeviceArray):
            return wrap(fn(a.view(np.ndarray), *args, **kwargs))
        if isinstance(a, (np.ndarray, list, tuple)):  # host data: a copy to the device
            out = to_fake(fn(a, *args, **kwargs), f"xp.{name}")
            return out
        return wrap(fn(a, *args, **kwargs))  # a Python or NumPy scalar
    return convert


def _device_function(name: str, fn: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        _refuse((args, kwargs), f"xp.{name}")
        return wrap(fn(*_unwrap(args), **_unwrap(kwargs)))
    call.__name__ = name
    return call


class _Ufunc:
    """A ufunc of the namespace: host operands refused, results on the device."""

    def __init__(self, uf: np.ufunc) -> None:
        self._uf = uf
        self.__name__ = uf.__name__
        for method in ("at", "reduce", "accumulate", "outer", "reduceat"):
            setattr(self, method, _device_function(f"{uf.__name__}.{method}", getattr(uf, method)))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _refuse((args, kwargs), f"xp.{self.__name__}")
        out = kwargs.get("out")
        result = self._uf(*_unwrap(args), **_unwrap(kwargs))
        if out is None:
            return wrap(result)
        return out[0] if isinstance(out, tuple) and len(out) == 1 else out


class _Generator:
    """The device's random generator (``xp.random.default_rng``): draws on the device."""

    def __init__(self, seed: Any) -> None:
        self._rng = np.random.default_rng(seed)

    def __getattr__(self, name: str) -> Any:
        return _device_function(f"random.Generator.{name}", getattr(self._rng, name))


class FakeNamespace(types.SimpleNamespace):
    """NumPy's names, the arrays they make on the fake device (see the module)."""

    def __getattr__(self, name: str) -> Any:
        attr = getattr(np, name)
        if name in ("asarray", "array", "ascontiguousarray", "asanyarray"):
            value = _converter(name)
        elif isinstance(attr, np.ufunc):
            value = _Ufunc(attr)
        elif callable(attr) and not isinstance(attr, type):
            value = _device_function(name, attr)
        else:
            value = attr  # dtypes, classes, constants
        setattr(self, name, value)
        return value


NAMESPACE = FakeNamespace(
    __name__="fake", ndarray=FakeDeviceArray,
    random=types.SimpleNamespace(default_rng=_Generator),
    lib=types.SimpleNamespace(stride_tricks=types.SimpleNamespace(
        as_strided=_device_function("lib.stride_tricks.as_strided",
                                    np.lib.stride_tricks.as_strided))))

DEVICE = runtime.Device("fake", NAMESPACE, FakeDeviceArray, to_fake, to_host)


def register() -> runtime.Device:
    """Make the fake device known to convscope.runtime (``model.to("fake")``, ``xp_of``)."""
    return runtime.register_device(DEVICE)


def unregister() -> None:
    runtime.unregister_device("fake")

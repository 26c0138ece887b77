"""Run-time state: the array module of an array (NumPy here, CuPy when the input lives on a
GPU), the devices arrays live on, and grad mode.

Layers never hard-code ``numpy`` for array math; they ask ``xp_of(x)`` so that the same code runs
on CuPy arrays unchanged (Chainer's ``get_array_module``).  A device is a place arrays live:
``"cpu"`` (NumPy), ``"cuda"`` / ``"cuda:N"`` (CuPy, ``pip install 'convscope[gpu]'``), or one a
test registers with :func:`register_device` (the fake device of tests/test_device_generic.py).
:func:`device_of` names an array's device, :func:`to_device` moves an array (``Layer.to`` moves
a model), :func:`synchronize` waits for a device's queued work.

Grad mode (:func:`no_grad`, :func:`grad_enabled`) is per thread, as the workspace is: inference
in one thread never strips the forward caches of a training step in another.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

__all__ = ["xp_of", "Device", "get_device", "register_device", "device_of", "to_device",
           "to_host", "synchronize", "local_rank", "GPU_MISSING", "grad_enabled", "no_grad"]

GPU_MISSING = ("--device cuda needs CuPy and an NVIDIA GPU: pip install 'convscope[gpu]' "
               "(CuPy for CUDA 12)")
#: Environment variables that give a process's rank on its own machine (Open MPI, MPICH, Slurm).
LOCAL_RANK_VARS = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID")


@dataclass(frozen=True)
class Device:
    """A place arrays live.  ``xp`` is its array namespace, ``array_type`` the type of its
    arrays; ``from_host(a)`` copies a NumPy array there, ``to_host(a)`` back; ``synchronize()``
    waits for its queued work; ``use()`` makes it the current device (CuPy's device
    context)."""

    name: str
    xp: Any
    array_type: type
    from_host: Callable[[np.ndarray], Any]
    to_host: Callable[[Any], np.ndarray]
    synchronize: Callable[[], None] = lambda: None
    use: Callable[[], None] = lambda: None

    @property
    def is_cpu(self) -> bool:
        return self.name == "cpu"


CPU = Device("cpu", np, np.ndarray, np.asarray, np.asarray)
_DEVICES: dict[str, Device] = {"cpu": CPU}   # by name ("cuda:0" once CuPy is loaded)
_BY_TYPE: dict[type, Device] = {}           # array type -> device, for xp_of and device_of


def register_device(device: Device) -> Device:
    """Make ``device`` known by name (``get_device``, ``Layer.to``) and by its array type
    (``xp_of``, ``device_of``); a later registration of the same name replaces it."""
    old = _DEVICES.get(device.name)
    if old is not None:
        _BY_TYPE.pop(old.array_type, None)
    _DEVICES[device.name] = device
    _BY_TYPE[device.array_type] = device
    return device


def unregister_device(name: str) -> None:
    """Forget a device registered with :func:`register_device` (tests)."""
    device = _DEVICES.pop(name, None)
    if device is not None and not device.is_cpu:
        _BY_TYPE.pop(device.array_type, None)
    _DEVICES.setdefault("cpu", CPU)


def local_rank() -> int:
    """This process's rank among the processes of an MPI job on its machine (0 outside one)."""
    for var in LOCAL_RANK_VARS:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


def _cuda(index: int | None) -> Device:
    """The CUDA device ``index`` (None: the local rank's GPU, modulo the GPUs there)."""
    try:
        import cupy  # noqa: PLC0415 - optional library, only for a GPU
        count = cupy.cuda.runtime.getDeviceCount()
    except ImportError:
        raise ImportError(GPU_MISSING) from None
    except Exception as exc:  # noqa: BLE001 - CUDA's own errors: no driver, no device
        raise RuntimeError(f"--device cuda: CuPy finds no usable GPU ({exc}); use --device "
                           "cpu") from None
    if count < 1:
        raise RuntimeError("--device cuda: CuPy finds no GPU on this machine; use --device cpu")
    if index is None:
        index = local_rank() % count  # under MPI each rank takes the GPU of its local rank
    if not 0 <= index < count:
        raise ValueError(f"device 'cuda:{index}': this machine has {count} GPU(s), "
                         f"cuda:0 to cuda:{count - 1}")
    name = f"cuda:{index}"
    if name not in _DEVICES:
        gpu = cupy.cuda.Device(index)

        def from_host(a: np.ndarray) -> Any:
            with gpu:
                return cupy.asarray(a)

        register_device(Device(name, cupy, cupy.ndarray, from_host, cupy.asnumpy,
                               lambda: cupy.cuda.get_current_stream().synchronize(), gpu.use))
        _DEVICES.setdefault("cuda", _DEVICES[name])
    return _DEVICES[name]


def get_device(device: "str | Device") -> Device:
    """The :class:`Device` for ``"cpu"``, ``"cuda"`` (the local rank's GPU), ``"cuda:N"`` or
    a registered name; else a ValueError naming the value and what would fit."""
    if isinstance(device, Device):
        return device
    name = str(device).strip().lower() if isinstance(device, str) else None
    if name in _DEVICES and name != "cuda":
        return _DEVICES[name]
    if name == "cuda":
        return _DEVICES.get("cuda") or _cuda(None)
    if name is not None and name.startswith("cuda:") and name[5:].isdigit():
        return _cuda(int(name[5:]))
    others = "".join(f", {n!r}" for n in _DEVICES if n != "cpu" and not n.startswith("cuda"))
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N' (N a GPU index){others}, got "
                     f"{device!r}")


def xp_of(*arrays: Any) -> Any:
    """The array namespace (``numpy``, ``cupy`` or a registered device's) of the first array
    given that lives on a device; ``numpy`` when none does."""
    if len(arrays) == 1 and type(arrays[0]) is np.ndarray:  # the common case, fast
        return np
    for a in arrays:
        t = type(a)
        if t is np.ndarray or a is None:
            continue
        dev = _BY_TYPE.get(t)
        if dev is not None:
            return dev.xp
        if t.__module__.split(".")[0] == "cupy":
            import cupy  # noqa: PLC0415 - only when a CuPy array is actually passed

            return cupy
    return np


def device_of(a: Any) -> str:
    """The name of the device array ``a`` lives on: "cpu" for NumPy arrays and scalars,
    "cuda:N" for a CuPy array on GPU N, a registered device's name."""
    t = type(a)
    if t is np.ndarray:
        return "cpu"
    dev = _BY_TYPE.get(t)
    if dev is None and t.__module__.split(".")[0] == "cupy" and t.__name__ == "ndarray":
        return f"cuda:{a.device.id}"
    return "cpu" if dev is None else dev.name


def to_device(a: Any, device: "str | Device") -> Any:
    """``a`` on ``device``: itself when it is there already, else a copy there (through host
    memory between two devices)."""
    target = get_device(device)
    here = device_of(a)
    if here == target.name:
        return a
    host = a if here == "cpu" else get_device(here).to_host(a)
    return host if target.is_cpu else target.from_host(host)


def to_host(a: Any) -> np.ndarray:
    """``a`` as a NumPy array (a copy off a device; ``a`` itself on the CPU)."""
    return to_device(a, CPU)


def synchronize(a: Any = None) -> None:
    """Wait until the device of ``a`` (every known device with None) has finished its queued
    work: before the host reads memory a kernel writes, and around timers."""
    devices = [get_device(device_of(a))] if a is not None else list(_DEVICES.values())
    for dev in devices:
        dev.synchronize()


class _GradMode(threading.local):
    """Grad mode of the calling thread: each thread starts enabled (the class attribute), so
    ``no_grad`` in one thread never changes another's, as the workspace is per thread too."""

    enabled = True


_grad_mode = _GradMode()


def grad_enabled() -> bool:
    """Whether layers keep what their backward pass needs, in this thread (see :func:`no_grad`)."""
    return _grad_mode.enabled


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Within this block, ``forward`` in this thread keeps no caches: inference only, less
    memory.  Other threads keep their own mode."""
    previous = _grad_mode.enabled
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous

"""What a training checkpoint holds and how it is written and read back: the run folder's file
names, the random generators of the stochastic layers (dropout) as uint64 arrays, the trainer's
state as arrays and header, and the checks made on loading.

A checkpoint is a safetensors file (``CHECKPOINT_FORMAT``) whose arrays are named
``model.<key>`` (the weights), ``optim.<key>`` (the optimiser's moments), ``rng.<layer>`` (each
stochastic layer's generator, ``<layer>`` its state-dict prefix such as ``4``) and
``best.<key>`` (the best weights so far); the header holds the counters, history and settings.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import ModelFileError
from ..formats.model_file import CHECKPOINT_FORMAT, read_safetensors, save_model, write_safetensors
from ..layers.base import Layer
from ..runtime import to_host
from .config import TrainConfig

__all__ = ["CHECKPOINT", "MODEL", "METRICS", "SECTIONS", "rng_to_array", "rng_from_array",
           "stochastic_layers", "seed_stochastic", "fingerprint", "split_sections",
           "check_weights", "state_arrays", "state_meta", "save_state", "load_state",
           "check_same_data", "write_model", "on_host"]

CHECKPOINT, MODEL, METRICS = "checkpoint.safetensors", "model.safetensors", "metrics.jsonl"
SECTIONS = ("model", "optim", "rng", "best")
_U64 = (1 << 64) - 1


def rng_to_array(state: Mapping[str, Any]) -> np.ndarray:
    """A PCG64 generator's ``bit_generator.state`` as 6 uint64: the 128-bit state and increment
    (high, low words), has_uint32, uinteger."""
    if state.get("bit_generator") != "PCG64":
        raise ValueError(f"cannot checkpoint a {state.get('bit_generator')} generator; use PCG64")
    s, inc = state["state"]["state"], state["state"]["inc"]
    return np.array([s >> 64, s & _U64, inc >> 64, inc & _U64, state["has_uint32"],
                     state["uinteger"]], dtype=np.uint64)


def rng_from_array(a: np.ndarray) -> dict[str, Any]:
    """The ``bit_generator.state`` that :func:`rng_to_array` wrote."""
    v = [int(t) for t in a]
    return {"bit_generator": "PCG64",
            "state": {"state": (v[0] << 64) | v[1], "inc": (v[2] << 64) | v[3]},
            "has_uint32": v[4], "uinteger": v[5]}


def _children(layer: Layer) -> list[tuple[str, Layer]]:
    kids = layer.children()
    if not kids and getattr(layer, "layers", None):  # a container without children() yet
        kids = [(str(i), child) for i, child in enumerate(layer.layers)]
    return list(kids)


def stochastic_layers(model: Layer) -> list[tuple[str, tuple[int, ...], Layer]]:
    """(state-dict prefix, position path, layer) of every layer with the ``stochastic`` trait,
    nested containers walked through ``children()``; top-level layer i has path (i,)."""
    found: list[tuple[str, tuple[int, ...], Layer]] = []

    def walk(layer: Layer, prefix: str, path: tuple[int, ...]) -> None:
        for pos, (name, child) in enumerate(_children(layer)):
            key, where = f"{prefix}{name}", (*path, pos)
            if child.stochastic:
                found.append((key, where, child))
            walk(child, f"{key}.", where)

    walk(model, "", ())
    return found


def seed_stochastic(model: Layer, seed: int) -> list[tuple[str, Layer]]:
    """Give each stochastic layer its own generator, ``default_rng([seed, 1, *path])``, so a
    run's dropout masks depend on the seed alone; returns (prefix, layer) pairs."""
    out = []
    for key, path, layer in stochastic_layers(model):
        layer.set_rng_state(np.random.default_rng([seed, 1, *path]).bit_generator.state)
        out.append((key, layer))
    return out


def fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """16 hex digits identifying a training set: its labels, every (N/64)-th image and the shape."""
    h = hashlib.sha256(np.ascontiguousarray(y).tobytes())
    h.update(np.ascontiguousarray(x[::max(1, len(x) // 64)]).tobytes())
    h.update(str(x.shape).encode())
    return h.hexdigest()[:16]


def split_sections(arrays: Mapping[str, np.ndarray], source: Path | str
                   ) -> dict[str, dict[str, np.ndarray]]:
    """A checkpoint's arrays by section ("model", "optim", "rng", "best"), prefixes removed."""
    sections: dict[str, dict[str, np.ndarray]] = {name: {} for name in SECTIONS}
    for key, value in arrays.items():
        head, _, rest = key.partition(".")
        if head not in sections:
            raise ModelFileError(f"{source}: unexpected array {key!r} in the checkpoint")
        sections[head][rest] = value
    return sections


def check_weights(own: Mapping[str, np.ndarray], saved: Mapping[str, np.ndarray],
                  source: Path | str) -> None:
    """The checkpoint's weights have this model's keys and shapes, else ModelFileError."""
    if set(own) != set(saved) or any(own[k].shape != saved[k].shape for k in own):
        raise ModelFileError(f"{source}: the checkpoint's weights do not match this model")


def state_arrays(trainer: Any) -> dict[str, np.ndarray]:
    """The trainer's arrays: weights, optimiser moments, generators, best weights."""
    arrays = {f"model.{k}": to_host(v) for k, v in trainer.model.state_dict().items()}
    arrays.update({f"optim.{k}": to_host(v)
                   for k, v in trainer.optimizer.state_dict()["arrays"].items()})
    for key, layer in trainer.stochastic:
        state = layer.rng_state()
        if state is not None:
            arrays[f"rng.{key}"] = rng_to_array(state)
    if trainer.best_state is not None:
        arrays.update({f"best.{k}": v for k, v in trainer.best_state.items()})
    return arrays


def state_meta(trainer: Any) -> dict[str, Any]:
    """The trainer's counters, history and settings (the checkpoint's JSON header)."""
    return {"epoch": trainer.epoch, "batch": trainer.batch, "step": trainer.step,
            "partial": dict(trainer.partial), "best": trainer.best,
            "bad_epochs": trainer.bad_epochs, "history": trainer.history,
            "config": trainer.config.to_dict(),
            "optimizer": {"lr": trainer.optimizer.lr, "step_count": trainer.optimizer.step_count},
            "data": trainer.data_info, "classes": trainer.classes}


def save_state(trainer: Any, target: Path) -> Path:
    """Write the trainer's whole state to ``target`` (atomically)."""
    return write_safetensors(target, state_arrays(trainer), CHECKPOINT_FORMAT, state_meta(trainer))


def load_state(trainer: Any, source: Path) -> None:
    """Restore into ``trainer`` the state :func:`save_state` wrote, after checking that it was
    made with the same settings (``epochs`` may differ) and the same model."""
    arrays, meta = read_safetensors(source, CHECKPOINT_FORMAT)
    try:
        saved = TrainConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: bad training settings in the checkpoint ({exc})") from None
    diffs = trainer.config.differences(saved)
    if diffs:
        raise ModelFileError(f"{source}: the checkpoint was trained with "
                             f"{', '.join(diffs)}; resume with the same settings")
    sections = split_sections(arrays, source)
    check_weights(trainer.model.state_dict(), sections["model"], source)
    trainer.model.load_state_dict(sections["model"])
    trainer.optimizer.load_state_dict({**meta["optimizer"], "arrays": sections["optim"]})
    for key, layer in trainer.stochastic:
        if key in sections["rng"]:
            layer.set_rng_state(rng_from_array(sections["rng"][key]))
    trainer.best_state = sections["best"] or None
    trainer.epoch, trainer.batch = int(meta["epoch"]), int(meta["batch"])
    trainer.step = int(meta["step"])
    trainer.partial = dict(meta["partial"])
    trainer.best, trainer.bad_epochs = meta["best"], int(meta["bad_epochs"])
    trainer.history = list(meta["history"])
    trainer.data_info = dict(meta.get("data") or {})


def check_same_data(saved: Mapping[str, Any], now: Mapping[str, Any], source: Path | None) -> None:
    """A resumed run trains on the data its checkpoint was made on (counts and fingerprint)."""
    if saved and saved != now:
        raise ModelFileError(f"{source}: the checkpoint was made on different data "
                             f"({saved['train']} training, {saved['val']} validation images; "
                             f"now {now['train']} and {now['val']})")


def write_model(trainer: Any, path: Path) -> Path:
    """The trainer's model as a model file, with its classes, normalisation and training record."""
    info = trainer.model_info
    training = {**info.get("training", {}), "config": trainer.config.to_dict(),
                "epochs_trained": trainer.epoch, "best": trainer.best}
    with on_host(trainer.model):
        return save_model(path, trainer.model, trainer.classes, normalization=trainer.normalizer,
                          background=info.get("background"), dataset=info.get("dataset"),
                          arch_name=info.get("arch_name"), training=training,
                          data=info.get("data"))


@contextlib.contextmanager
def on_host(model: Layer) -> Iterator[Layer]:
    """Within the block, ``model``'s parameters and buffers (every layer's, through
    ``children()``) are host copies, for what reads NumPy arrays (model files, pictures,
    callbacks); the device arrays are put back after, the same objects, so optimisers and the
    flat gradient buffer still hold them.  A model on the CPU is left as it is."""
    if model.device == "cpu":
        yield model
        return
    swapped: list[tuple[dict, dict]] = []
    todo = [model]
    while todo:
        layer = todo.pop()
        todo.extend(child for _, child in _children(layer))
        for key in ("params", "buffers"):
            arrays = vars(layer).get(key)
            if isinstance(arrays, dict) and arrays:
                swapped.append((arrays, dict(arrays)))
                arrays.update({k: to_host(v) for k, v in arrays.items()})
    try:
        yield model
    finally:
        for arrays, device_arrays in swapped:
            arrays.update(device_arrays)

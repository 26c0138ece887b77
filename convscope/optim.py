"""Optimisers that update parameters in place, step for step as torch.optim does.

``opt = SGD(model, lr=0.01, momentum=0.9)``; each step: ``model.zero_grad()`` (or
``opt.zero_grad()``), forward, loss, backward, ``opt.step()``.  The state (momentum, moments)
is allocated where each parameter lives (``xp_of(p)``): on the GPU for a model moved there.
"""

from __future__ import annotations

import math
from typing import Any

from . import workspace
from .runtime import device_of, get_device, to_device, xp_of

Array = Any


class Optimizer:
    """Base: holds (name, parameter, gradient) triples and per-parameter state."""

    def __init__(self, params: Any, lr: float) -> None:
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        self._model = params if hasattr(params, "parameters") else None  # to re-read on .to()
        triples = params.parameters() if self._model is not None else list(params)
        self.params: list[tuple[str, Array, Array]] = list(triples)
        if not self.params:
            raise ValueError("optimiser got no parameters; build the model (give input_shape) first")
        self.lr = float(lr)
        self.step_count = 0
        self.state: dict[str, dict[str, Array]] = {name: {} for name, _, _ in self.params}

    def to(self, device: Any) -> "Optimizer":
        """Move the state to ``device`` ("cpu", "cuda", "cuda:N"); an optimiser made on a model
        takes its (moved) parameters again.  Returns self.  Call after ``model.to(device)``."""
        dev = get_device(device)
        if self._model is not None:
            fresh = list(self._model.parameters())
            if [n for n, _, _ in fresh] != [n for n, _, _ in self.params]:
                raise ValueError("Optimizer.to: the model's parameters changed since the "
                                 "optimiser was made; make a new optimiser")
            self.params = fresh
        where = {n: device_of(p) for n, p, _ in self.params}
        off = next((n for n, d in where.items() if d != dev.name), None)
        if off is not None:
            raise ValueError(f"Optimizer.to({dev.name!r}): parameter {off!r} is on {where[off]}; "
                             f"move the model first: model.to({dev.name!r})")
        for slots in self.state.values():
            for slot, a in slots.items():
                slots[slot] = to_device(a, dev)
        return self

    def zero_grad(self) -> None:
        for _, _, g in self.params:
            g[...] = 0

    def step(self) -> None:
        self.step_count += 1
        for name, p, g in self.params:
            self._update(p, g, self.state[name])

    def _update(self, p: Array, g: Array, state: dict[str, Array]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """lr, step count and every state array, keyed '<param>.<slot>' (for checkpoints)."""
        arrays = {f"{n}.{slot}": a for n, s in self.state.items() for slot, a in s.items()}
        return {"lr": self.lr, "step_count": self.step_count, "arrays": arrays}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr = float(state["lr"])
        self.step_count = int(state["step_count"])
        where = {n: device_of(p) for n, p, _ in self.params}
        for key, value in state["arrays"].items():
            name, slot = key.rsplit(".", 1)
            if name not in where:
                raise KeyError(f"optimiser state for unknown parameter {name!r}")
            # a copy, on the parameter's device (a checkpoint's arrays are on the host)
            self.state[name][slot] = to_device(xp_of(value).array(value, copy=True), where[name])


class SGD(Optimizer):
    """g += wd·p;  buf = momentum·buf + (1 - dampening)·g (buf = g at the first step);
    g = g + momentum·buf (nesterov) or buf;  p -= lr·g."""

    def __init__(self, params: Any, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.nesterov, self.weight_decay = bool(nesterov), float(weight_decay)

    def _update(self, p: Array, g: Array, state: dict[str, Array]) -> None:
        xp = xp_of(p)
        tmp = workspace.empty(p.shape, p.dtype, xp)  # one recycled scratch array, no temporaries
        if self.weight_decay:
            g = xp.add(g, xp.multiply(p, self.weight_decay, out=tmp), out=tmp)
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= self.momentum
                buf += g if self.dampening == 0 else xp.multiply(g, 1 - self.dampening, out=tmp)
            if self.nesterov:  # g may be tmp itself: a second scratch array
                ahead = workspace.empty(p.shape, p.dtype, xp)
                g = xp.add(g, xp.multiply(buf, self.momentum, out=ahead), out=ahead)
            else:
                g = buf
        p -= xp.multiply(g, self.lr, out=tmp)


class Adam(Optimizer):
    """m = b1·m + (1 - b1)·g;  v = b2·v + (1 - b2)·g²;
    p -= lr / (1 - b1^t) · m / (sqrt(v) / sqrt(1 - b2^t) + eps).  weight_decay adds wd·p to g (L2)."""

    decoupled = False

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = (float(betas[0]), float(betas[1])), float(eps), float(weight_decay)

    def _update(self, p: Array, g: Array, state: dict[str, Array]) -> None:
        xp = xp_of(p)
        b1, b2 = self.betas
        t = self.step_count
        if self.weight_decay:
            if self.decoupled:
                p *= 1 - self.lr * self.weight_decay
            else:
                g = g + self.weight_decay * p
        if "exp_avg" not in state:
            state["exp_avg"], state["exp_avg_sq"] = xp.zeros_like(p), xp.zeros_like(p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        tmp = workspace.empty(p.shape, p.dtype, xp)  # recycled scratch arrays, no temporaries
        denom = workspace.empty(p.shape, p.dtype, xp)
        m *= b1
        m += xp.multiply(g, 1 - b1, out=tmp)
        v *= b2
        v += xp.multiply(xp.multiply(g, 1 - b2, out=tmp), g, out=tmp)
        xp.sqrt(v, out=denom)
        denom /= math.sqrt(1 - b2 ** t)
        denom += self.eps
        step = xp.multiply(m, self.lr / (1 - b1 ** t), out=tmp)
        p -= xp.divide(step, denom, out=tmp)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr·wd before the Adam step (default wd 0.01)."""

    decoupled = True

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)



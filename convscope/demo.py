"""A first look: the lecture's network, its summary, and a few training steps on generated data.

Run with ``python -m convscope.demo``.
"""

from __future__ import annotations

import numpy as np

from . import (CrossEntropyLoss, Conv2D, Flatten, Linear, MaxPool2D, ReLU, SGD, Sequential)


def lecture_net(seed: int = 0) -> Sequential:
    """32x32x3 -> CONV(six 5x5x3) -> RELU -> CONV(ten 5x5x6) -> RELU -> POOL -> FC(10)."""
    return Sequential(Conv2D(3, 6, 5), ReLU(), Conv2D(6, 10, 5), ReLU(), MaxPool2D(2), Flatten(),
                      Linear(None, 10), input_shape=(3, 32, 32), seed=seed)


def main(steps: int = 30) -> float:
    net = lecture_net()
    print(net.summary())
    rng = np.random.default_rng(0)
    # Generated data: class k is noise plus a bright k-th horizontal band, so there is something to learn.
    y = rng.integers(0, 10, size=64)
    x = rng.normal(0, 0.5, size=(64, 3, 32, 32)).astype(np.float32)
    for i, k in enumerate(y):
        x[i, :, 3 * k:3 * k + 3, :] += 1.0
    loss_fn, opt = CrossEntropyLoss(), SGD(net, lr=0.01, momentum=0.9)
    for step in range(1, steps + 1):
        net.zero_grad()
        loss = float(loss_fn(net(x), y))
        net.backward(loss_fn.backward())
        opt.step()
        if step == 1 or step % 10 == 0:
            print(f"step {step:3d}  loss {loss:.4f}")
    acc = float((net.predict(x).argmax(1) == y).mean())
    print(f"training accuracy on the generated batch: {acc:.0%}")
    return acc


if __name__ == "__main__":
    main()

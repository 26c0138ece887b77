"""Cold starts, each a fresh interpreter: ``import torch`` alone, ``import convscope``, and
``convscope predict MODEL image.png`` (start, import, load the model file, read the image,
infer, print), medians of interleaved runs."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .timing import Timing

PREDICT = "import sys; from convscope.cli import main; sys.exit(main())"


def _run(argv: Sequence[str], cwd: str | None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(list(argv), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip().splitlines()[-1:]}")
    return seconds


def _model_and_image(folder: Path) -> tuple[Path, Path]:
    """A lenet5 model file (untrained weights: the cost is the same) and a 28x28 PNG digit."""
    from PIL import Image

    from convscope.io import save_model

    from .cases import build_net

    net = build_net("lenet5", (1, 28, 28))
    model = save_model(folder / "lenet5.safetensors", net, [str(i) for i in range(10)],
                       dataset="digits", arch_name="lenet5")
    img = np.zeros((28, 28), np.uint8)
    img[6:22, 12:16] = 255  # a "1"
    image = folder / "digit.png"
    Image.fromarray(img).save(image)
    return Path(model), image


def measure(reps: int, root: str, warm: bool = True) -> dict:
    """Timings of the three commands, run from ``root`` (where ``convscope`` imports from);
    ``warm``: run each once first, untimed (file cache)."""
    py = sys.executable
    commands = {"import torch": [py, "-c", "import torch"],
                "import convscope": [py, "-c", "import convscope"]}
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            model, image = _model_and_image(Path(tmp))
            commands["convscope predict"] = [py, "-c", PREDICT, "predict", str(model), str(image)]
        except Exception as exc:  # noqa: BLE001 - report, do not stop the benchmark
            out["predict_error"] = f"{type(exc).__name__}: {exc}"
        for cmd in commands.values() if warm else ():  # warm the file cache
            _run(cmd, root)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for r in range(reps):
            for name in (list(commands) if r % 2 == 0 else list(commands)[::-1]):
                times[name].append(_run(commands[name], root))
    out.update({name: Timing(tuple(t)).as_dict() for name, t in times.items()})
    return out

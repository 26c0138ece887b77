"""The GPU check (../shared/scale.md §9): convscope on CuPy against convscope on NumPy and
against PyTorch CUDA, in under 5 minutes on a machine with python3, CuPy, torch and no package
registry.  Run from the repository root, nothing installed::

    python scripts/gpu_check.py [--json OUT.json] [--quick] [--skip-timing]

1. Every registered layer kind, CuPy vs NumPy: output, input gradient and parameter gradients
   (float64 to 1e-10, float32 to 1e-4), in training and in evaluation mode; Dropout's mask is
   drawn on the GPU, checked by its values (0 or 1/(1 − p)) and its rate.
2. Three training steps (conv, batch norm, pool, linear, cross-entropy; SGD with momentum and
   Adam) on the GPU equal to the CPU's; a Trainer epoch with ``device="cuda"`` too.
3. Step times (forward, backward, SGD update; CUDA synchronised around the timers, after
   warm-up) of LeNet-5, the CIFAR preset and ResNet-20 (when the preset exists): convscope on
   the GPU, PyTorch on CUDA (TF32 off, as convscope computes in true float32), convscope on the
   CPU; a table.
4. With mpi4py and mpirun present: 2 ranks on the GPU against 1 (|Δw| ≤ 1e-5 in float32),
   gradients staged through host memory; skipped without them.

Exit status 1 on any mismatch, 2 when there is no GPU (CuPy missing or no device).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # convscope from this checkout, not installed

import numpy as np  # noqa: E402

import convscope as cs  # noqa: E402
from convscope import runtime  # noqa: E402
from convscope.layers.registry import REGISTRY  # noqa: E402

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
FAILED: list[str] = []


def gpu_missing() -> str | None:
    """Why there is no GPU to check on, or None."""
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy finds no GPU"
        (cupy.arange(3) + 1).sum().item()
    except Exception as exc:  # noqa: BLE001 - ImportError, CUDA driver errors
        return f"{type(exc).__name__}: {exc}"
    return None


def host(a: Any) -> np.ndarray:
    return runtime.to_host(a) if a is not None else a


def err(a: Any, b: Any) -> float:
    """max |a − b| / max(1, max |b|): relative to the size of the values."""
    a, b = host(a).astype(np.float64), host(b).astype(np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def check(what: str, error: float, tol: float) -> bool:
    ok = error <= tol
    if not ok:
        FAILED.append(f"{what}: error {error:.3g} > {tol:g}")
    return ok


# ---------------------------------------------------------------------------------------------
# 1. every layer kind


def layer_rows(device: str = "cuda") -> list[dict[str, Any]]:
    rows = []
    built_in = [n for n, k in REGISTRY.items() if k.cls.__module__.startswith("convscope.")]
    for name in built_in:
        kind = REGISTRY[name]
        for dtype in (np.float64, np.float32):
            for training in (True, False):
                cpu, shape = kind.cls.example(dtype)
                gpu = copy.deepcopy(cpu)
                cpu.train(training)
                gpu.train(training).to(device)
                x = np.random.default_rng(1).standard_normal((4, *shape)).astype(dtype)
                y = cpu.forward(x)
                dy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
                cpu.zero_grad()
                dx = cpu.backward(dy)
                yg = gpu.forward(runtime.to_device(x, device))
                dxg = gpu.backward(runtime.to_device(dy, device))
                on_gpu = all(runtime.device_of(v) != "cpu" for v in
                             (yg, dxg, *gpu.params.values(), *gpu.grads.values(),
                              *gpu.buffers.values()))
                tol = TOL[np.dtype(dtype)]
                label = f"{name} {np.dtype(dtype).name} {'train' if training else 'eval'}"
                if kind.cls.stochastic and training:  # its own mask: check what it must be
                    scale = host(yg) / np.where(x == 0, 1, x)
                    kept = np.isclose(scale, 1 / (1 - gpu.p), rtol=tol)
                    good = bool(((scale == 0) | kept).all()) and abs(kept.mean() - (1 - gpu.p)) < 0.3
                    errors = {"y": 0.0 if good else float("inf"),
                              "dx": err(dxg, dy * scale)}
                else:
                    errors = {"y": err(yg, y), "dx": err(dxg, dx)}
                    errors.update({f"d{k}": err(gpu.grads[k], cpu.grads[k]) for k in cpu.grads})
                worst = max(errors.values())
                ok = check(label, worst, tol)
                if not on_gpu:
                    FAILED.append(f"{label}: an output, parameter, gradient or buffer is on the host")
                rows.append({"layer": label, "max_error": worst, "tol": tol, "ok": ok and on_gpu})
    return rows


# ---------------------------------------------------------------------------------------------
# 2. training steps and the Trainer


def step_net(dtype: Any) -> cs.Sequential:
    return cs.Sequential(cs.Conv2D(3, 8, 3, padding=1, bias=False, dtype=dtype, seed=0),
                         cs.BatchNorm2D(8, dtype=dtype), cs.ReLU(), cs.MaxPool2D(2),
                         cs.Conv2D(8, 16, 3, dtype=dtype, seed=1), cs.ReLU(), cs.Flatten(),
                         cs.Linear(None, 10, dtype=dtype), input_shape=(3, 16, 16), seed=0)


def train_steps(net: cs.Sequential, opt: Any, batches: list, device: str) -> cs.Sequential:
    loss_fn = cs.CrossEntropyLoss(0.1)
    for x, y in batches:
        net.zero_grad()
        loss_fn.forward(net.forward(runtime.to_device(x, device)), runtime.to_device(y, device))
        net.backward(loss_fn.backward(), input_grad=False)
        opt.step()
    return net


def step_rows(device: str = "cuda") -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        batches = [(rng.standard_normal((32, 3, 16, 16)).astype(dtype), rng.integers(0, 10, 32))
                   for _ in range(3)]
        for name, make in (("sgd", lambda m: cs.SGD(m, lr=0.05, momentum=0.9, weight_decay=1e-3)),
                           ("adam", lambda m: cs.Adam(m, lr=1e-3))):
            cpu = step_net(dtype)
            gpu = copy.deepcopy(cpu).to(device)
            train_steps(cpu, make(cpu), batches, "cpu")
            train_steps(gpu, make(gpu), batches, device)
            worst = max(err(gpu.state_dict()[k], v) for k, v in cpu.state_dict().items())
            label = f"3 steps {name} {np.dtype(dtype).name}"
            rows.append({"step": label, "max_error": worst, "tol": TOL[np.dtype(dtype)],
                         "ok": check(label, worst, TOL[np.dtype(dtype)])})
    from convscope.train import TrainConfig, Trainer
    x = rng.integers(0, 256, (96, 3, 16, 16), dtype=np.uint8)
    y = rng.integers(0, 10, 96)
    cfg = TrainConfig(epochs=1, batch_size=32, optimizer="sgd", lr=0.02, seed=1)
    models = {}
    for where in ("cpu", device):
        models[where] = step_net(np.float64)
        Trainer(models[where], cfg, device=where).fit(x[:64], y[:64], x[64:], y[64:])
    worst = max(err(models[device].state_dict()[k], v)
                for k, v in models["cpu"].state_dict().items())
    rows.append({"step": "Trainer epoch float64", "max_error": worst, "tol": 1e-10,
                 "ok": check("Trainer epoch float64", worst, 1e-10)})
    return rows


# ---------------------------------------------------------------------------------------------
# 3. step times


def _time(fn: Any, sync: Any, repeats: int) -> float:
    for _ in range(2):  # warm-up: CuPy compiles its kernels, cuBLAS picks its algorithms
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeats * 1e3


def timing_rows(device: str = "cuda", quick: bool = False) -> list[dict[str, Any]]:
    from convscope.formats.architecture import build_model
    from convscope.formats.presets import PRESETS
    try:
        import torch
        from convscope.formats.torch.convert import to_torch
        torch_cuda = torch.cuda.is_available()
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    except ImportError:
        torch = None
        torch_cuda = False
    cases = [("lenet5", (1, 32, 32), 128), ("cifar", (3, 32, 32), 128)]
    if "resnet20" in PRESETS:
        cases.append(("resnet20", (3, 32, 32), 128))
    rows = []
    for name, shape, batch in cases:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        row: dict[str, Any] = {"model": name, "batch": batch}
        for where in ("gpu", "cpu"):
            if where == "cpu" and quick:
                continue
            net = build_model(name, shape, 10, seed=0)
            dev = device if where == "gpu" else "cpu"
            net.to(dev)
            opt = cs.SGD(net, lr=0.01, momentum=0.9)
            loss_fn = cs.CrossEntropyLoss()
            xd, yd = runtime.to_device(x, dev), runtime.to_device(y, dev)

            def step() -> None:
                net.zero_grad()
                loss_fn.forward(net.forward(xd), yd)
                net.backward(loss_fn.backward(), input_grad=False)
                opt.step()
            row[f"convscope_{where}_ms"] = round(_time(step, lambda: runtime.synchronize(xd),
                                                       3 if where == "cpu" else 10), 2)
        if torch_cuda:
            module = to_torch(build_model(name, shape, 10, seed=0)).cuda().train()
            topt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
            tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
            lossf = torch.nn.CrossEntropyLoss()

            def tstep() -> None:
                topt.zero_grad()
                lossf(module(tx), ty).backward()
                topt.step()
            row["torch_cuda_ms"] = round(_time(tstep, torch.cuda.synchronize, 10), 2)
            row["convscope_vs_torch"] = round(row["convscope_gpu_ms"] / row["torch_cuda_ms"], 2)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# 4. MPI: 2 ranks on the GPU equal 1


def ddp_worker(out: str, device: str = "cuda") -> None:
    """Under mpirun: 6 steps of float32 data-parallel training on this rank's GPU."""
    import convscope.distributed as dist
    from convscope.train import TrainConfig, Trainer
    comm = dist.init()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (70, 3, 16, 16), dtype=np.uint8)
    y = rng.integers(0, 10, 70)
    model = cs.Sequential(cs.Conv2D(3, 8, 3, padding=1), cs.ReLU(), cs.MaxPool2D(2),
                          cs.Flatten(), cs.Dropout(0.2), cs.Linear(None, 10),
                          input_shape=(3, 16, 16), seed=0)
    cfg = TrainConfig(epochs=1, batch_size=32, optimizer="sgd", lr=0.05, seed=3)
    Trainer(model, cfg, comm=comm, device=device).fit(x, y)  # 70 = 32 + 32 + 6: uneven
    if comm.rank == 0:
        np.savez(out, **{k: host(v) for k, v in model.state_dict().items()},
                 __device=np.array(model.device), __size=np.array(comm.size))


def mpi_rows(device: str = "cuda") -> list[dict[str, Any]]:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return [{"mpi": "skipped: no mpi4py"}]
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        return [{"mpi": "skipped: no mpirun on PATH"}]
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_mpi_yield_when_idle": "1", "PYTHONPATH": f"{ROOT}:" + os.environ.get(
               "PYTHONPATH", "")}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in (1, 2):
            path = Path(tmp) / f"w{k}.npz"
            cmd = [mpirun, "--bind-to", "none", "--oversubscribe", "-np", str(k), sys.executable,
                   "-m", "mpi4py", __file__, "--ddp-worker", str(path), "--ddp-device", device]
            try:
                r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
            except subprocess.TimeoutExpired:
                FAILED.append(f"mpirun -np {k}: timed out")
                return [{"mpi": f"-np {k} timed out"}]
            if r.returncode != 0:
                FAILED.append(f"mpirun -np {k}: exit {r.returncode}: {r.stderr[-500:]}")
                return [{"mpi": f"-np {k} failed"}]
            with np.load(path) as f:
                out[k] = {n: f[n] for n in f.files}
    worst = max(err(out[2][n], out[1][n]) for n in out[1] if not n.startswith("__"))
    return [{"mpi": f"2 ranks vs 1 on {device}, float32", "device": str(out[2]["__device"]),
             "max_error": worst, "tol": 1e-5, "ok": check("mpi 2 vs 1", worst, 1e-5)}]


# ---------------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 0.01 or abs(v) == float("inf") else f"{v:,.2f}"
        return "" if v is None else str(v)
    cells = [[cell(r.get(k)) for k in keys] for r in rows]
    width = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, width))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, width)) for row in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="OUT", help="also write every row as JSON")
    p.add_argument("--quick", action="store_true", help="no CPU step times")
    p.add_argument("--skip-timing", action="store_true", help="no step times at all")
    p.add_argument("--ddp-worker", metavar="NPZ", help=argparse.SUPPRESS)
    p.add_argument("--ddp-device", default="cuda", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args.ddp_worker, args.ddp_device)
        return 0
    why = gpu_missing()
    if why is not None:
        print(f"gpu_check: no GPU to check on ({why})", file=sys.stderr)
        return 2
    import cupy
    print(f"cupy {cupy.__version__}, numpy {np.__version__}, "
          f"{cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}", flush=True)
    t0 = time.perf_counter()
    report: dict[str, Any] = {}
    for section, fn in (("layers", layer_rows), ("steps", step_rows),
                        ("timing", None if args.skip_timing else
                         lambda: timing_rows(quick=args.quick)), ("mpi", mpi_rows)):
        if fn is None:
            continue
        t = time.perf_counter()
        try:
            report[section] = fn()
        except Exception as exc:  # noqa: BLE001 - one section failing must not hide the others
            FAILED.append(f"{section}: {type(exc).__name__}: {exc}")
            report[section] = [{"error": f"{type(exc).__name__}: {exc}"}]
        rows = report[section]
        shown = [r for r in rows if not r.get("ok", True)] if section == "layers" else rows
        print(f"\n== {section} ({time.perf_counter() - t:.1f} s): "
              f"{sum(r.get('ok', True) for r in rows)}/{len(rows)} ok", flush=True)
        if section == "layers":
            worst = {dt: max((r["max_error"] for r in rows if dt in r["layer"]), default=0.0)
                     for dt in ("float64", "float32")}
            print(f"worst error: float64 {worst['float64']:.3g} (tol 1e-10), float32 "
                  f"{worst['float32']:.3g} (tol 1e-4)")
        print(table(shown), flush=True)
    report["failed"] = FAILED
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\n{'FAILED: ' + '; '.join(FAILED) if FAILED else 'all checks passed'} "
          f"({report['seconds']} s)")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())

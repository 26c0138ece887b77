"""Data-parallel scaling on this machine, and a forecast for a cluster.

    python -m bench.scaling --quick            # ~1 minute: 2 epochs, target 85 %
    python -m bench.scaling --json out.json    # 6 epochs, target 95 %

Measured (LeNet-5 on the bundled digits, 4,000 training images, 1,000 test images, global batch
64, SGD momentum 0.9, lr 0.05, the same seed): one process with 2 BLAS threads against 2 MPI
workers with 1 thread each (``mpirun --bind-to none -np 2 python -m mpi4py -m bench.scaling
--worker``): training images/s, seconds until the test accuracy reaches the target (checked
after each epoch, evaluation time included), and for the workers the Allreduce's share of a
step (time inside ``GradReducer.reduce`` over the step's time) and an Allreduce of the gradient
buffer on its own (median of 50).

Forecast (a model, not a measurement): K machines with one worker each on a 10 Gb/s network, a
ring Allreduce of S bytes costing ``2(K-1)·alpha + 2(K-1)/K · S / 1.25 GB/s`` (alpha = 50 µs per
message, an assumed TCP latency), and each worker computing B/K images of a global batch of B at
the measured single-thread rate:  speed-up(K) = T(1) / (T(1)/K + allreduce(K)).  For ResNet-20
(0.27 M parameters) when its preset exists.  Shared-memory Allreduce figures from this machine
are not network figures; the forecast uses only the buffer's size from them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BATCH, LR, SEED = 64, 0.05, 0
ALPHA, BANDWIDTH = 50e-6, 10e9 / 8  # s per message (assumed), bytes/s of 10 Gb/s


def _threads(n: int) -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="blas")


def train(comm: Any, epochs: int, target: float) -> dict[str, Any]:
    """LeNet-5 on digits with ``comm``'s workers; timings and accuracies (rank 0's view)."""
    import convscope as cs
    import convscope.distributed as dist
    from convscope.data import BatchLoader, Normalizer, load_dataset
    from convscope.formats.architecture import build_model
    from convscope.train import evaluate

    ds = load_dataset("digits")
    norm = Normalizer.fit(ds.x_train)
    model = build_model("lenet5", ds.input_shape, ds.num_classes, seed=SEED)
    opt = cs.SGD(model, LR, momentum=0.9)
    dist.broadcast_state(model, comm)
    reducer = dist.GradReducer(model, comm, opt)
    loss_fn = cs.CrossEntropyLoss()
    loader = BatchLoader(ds.x_train, ds.y_train, BATCH, seed=SEED, normalizer=norm)
    x_test = norm(ds.x_test)
    out: dict[str, Any] = {"workers": comm.size, "params": int(reducer.count),
                           "buffer_bytes": int(reducer.buffer.nbytes), "epochs": []}
    t_train = t_reduce = 0.0
    images = steps = 0
    reached = None
    t_start = time.perf_counter()
    for epoch in range(epochs):
        for gb in dist.global_batches(loader, comm):
            t0 = time.perf_counter()
            reducer.zero_grad()
            dist.set_batch_shard(model, gb.start, gb.stop, gb.total)
            scores = model.forward(gb.x)
            loss = float(loss_fn.forward(scores, gb.y)) if gb.n_local else 0.0
            model.backward(loss_fn.backward() if gb.n_local else np.zeros_like(scores),
                           input_grad=False)
            t1 = time.perf_counter()
            reducer.reduce(gb.n_local, loss * gb.n_local)
            t2 = time.perf_counter()
            opt.step()
            t_train += time.perf_counter() - t0
            t_reduce += t2 - t1
            images += gb.total
            steps += 1
        ev = dist.evaluate_sharded(evaluate, comm, model, x_test, ds.y_test,
                                   num_classes=ds.num_classes)
        elapsed = time.perf_counter() - t_start
        out["epochs"].append({"epoch": epoch + 1, "seconds": round(elapsed, 2),
                              "test_accuracy": ev.accuracy})
        if reached is None and ev.accuracy >= target:
            reached = elapsed
    out.update(images_per_second=round(images / t_train, 1), seconds_to_target=reached,
               target=target, step_ms=round(1e3 * t_train / steps, 3),
               reduce_share=round(t_reduce / t_train, 4))
    if comm.size > 1:  # the Allreduce alone, no compute around it
        times = []
        for _ in range(50):
            comm.barrier()
            t0 = time.perf_counter()
            comm.allreduce_(reducer.buffer)
            times.append(time.perf_counter() - t0)
        out["allreduce_ms"] = round(1e3 * float(np.median(times)), 3)
    return out


def single_thread_image_seconds(arch: str, input_shape: tuple, classes: int) -> tuple[float, int]:
    """Seconds per training image of ``arch`` on one thread (batch 64, median of 5 steps) and
    its parameter count."""
    import convscope as cs
    from convscope.formats.architecture import build_model

    model = build_model(arch, input_shape, classes, seed=0)
    opt = cs.SGD(model, 0.01, momentum=0.9)
    loss = cs.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH,) + tuple(input_shape)).astype(np.float32)
    y = rng.integers(0, classes, BATCH)
    times = []
    with _threads(1):
        for i in range(7):
            t0 = time.perf_counter()
            opt.zero_grad()
            loss.forward(model.forward(x), y)
            model.backward(loss.backward(), input_grad=False)
            opt.step()
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return float(np.median(times)) / BATCH, sum(int(p.size) for p in model.params.values())


def forecast(image_seconds: float, params: int, ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
             ) -> list[dict[str, float]]:
    """speed-up(K) for one worker per machine on 10 Gb/s (the model in the module docstring)."""
    nbytes = 4 * (params + 4)  # float32 gradients and the four slots
    t1 = BATCH * image_seconds
    rows = []
    for k in ks:
        ar = 0.0 if k == 1 else 2 * (k - 1) * ALPHA + 2 * (k - 1) / k * nbytes / BANDWIDTH
        tk = t1 / k + ar
        rows.append({"machines": k, "step_ms": round(1e3 * tk, 3),
                     "allreduce_ms": round(1e3 * ar, 3), "speedup": round(t1 / tk, 2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 epochs, target 85 %%")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    p.add_argument("--target", type=float, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    epochs = a.epochs or (2 if a.quick else 6)
    target = a.target or (0.85 if a.quick else 0.95)
    import convscope.distributed as dist

    if a.worker:
        comm = dist.init()
        with _threads(1):
            res = train(comm, epochs, target)
        if comm.rank == 0:
            print(json.dumps(res), flush=True)
        return 0
    with _threads(2):
        one = train(dist.Local(), epochs, target)
    env = dist.mpirun_env()
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = dist.mpirun_command(["--worker", "--epochs", str(epochs), "--target", str(target)], 2,
                              module="bench.scaling")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return 1
    two = json.loads(proc.stdout.strip().splitlines()[-1])
    models = {"lenet5": ("lenet5", (1, 28, 28), 10)}
    from convscope.formats.architecture import PRESETS

    if "resnet20" in PRESETS:
        models["resnet20"] = ("resnet20", (3, 32, 32), 10)
    fc: dict[str, Any] = {"note": "FORECAST from a model (not measured): ring Allreduce on "
                          f"10 Gb/s, alpha {ALPHA * 1e6:.0f} us, 1 worker x 1 thread per machine, "
                          f"global batch {BATCH}"}
    for name, (arch, shape, classes) in models.items():
        sec, params = single_thread_image_seconds(arch, shape, classes)
        fc[name] = {"params": params, "ms_per_image_1_thread": round(1e3 * sec, 4),
                    "rows": forecast(sec, params)}
    if "resnet20" not in models:
        fc["resnet20"] = "no resnet20 preset yet"
    result = {"machine": f"{os.cpu_count()} cores", "one_process_2_threads": one,
              "two_workers_1_thread": two, "forecast": fc}
    print(f"LeNet-5 on digits, global batch {BATCH}, {epochs} epochs, target "
          f"{100 * target:.0f} % test accuracy")
    for label, r in (("1 process x 2 threads", one), ("2 workers x 1 thread", two)):
        acc = r["epochs"][-1]["test_accuracy"]
        reach = f"{r['seconds_to_target']:.1f} s" if r["seconds_to_target"] else "not reached"
        extra = (f", Allreduce {100 * r['reduce_share']:.1f} % of a step "
                 f"({r['allreduce_ms']:.2f} ms alone for {r['buffer_bytes'] / 1e3:.0f} kB)"
                 if r["workers"] > 1 else "")
        print(f"  {label}: {r['images_per_second']:,.0f} img/s, {r['step_ms']:.1f} ms/step, "
              f"to target {reach}, final {100 * acc:.1f} %{extra}")
    print(fc["note"])
    for name in models:
        print(f"  {name}: " + ", ".join(f"K={r['machines']}: x{r['speedup']}"
                                        for r in fc[name]["rows"]))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""convscope against PyTorch 2 on the CPU: one table, one JSON file.

    python -m bench                 # full run (a few minutes)
    python -m bench --quick         # under a minute: fewer repetitions
    python -m bench --json out.json --threads 2 --only conv

What is measured (all float32, both libraries on the same number of threads, set with
threadpoolctl and ``torch.set_num_threads``):

* conv forward, and forward+backward (dx, dW, db), on the issue's seven shapes, each also against
  the bare NumPy GEMMs of the same shapes run in the same loop (the GEMM ceiling: what fraction
  of the time is matrix multiply);
* 2x2 max-pool, batch norm and a fully connected layer, forward+backward;
* a full training step (zero grads, forward, cross-entropy, backward, SGD with momentum) of
  ``lenet5`` on 28x28x1 and of the CIFAR-style net on 32x32x3, batch 64;
* inference of ``lenet5`` at batch 1 and 256;
* the peak memory of a training step (fresh process per library, see :mod:`bench.memory`);
* cold starts: ``import torch``, ``import convscope``, ``convscope predict MODEL image.png``.

Every time is the median of interleaved repetitions after warm-up, with its min-max; each timed
call follows 5 ms of untimed calls of the same function, so each library is timed with its own
threads warm and the other's idle (:mod:`bench.timing`).  The ratio is convscope's median over
PyTorch's: below 1, convscope is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from convscope.ops import jit

from . import cases as C
from .timing import Timing, interleaved

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = Path(__file__).resolve().parent / "last-run.json"

# Seconds between contestants: OpenBLAS's idle threads keep spinning for about 0.1 s after a
# GEMM (PyTorch's OpenMP threads about 3 ms) and meanwhile hold the cores the other library's
# threads need (a 0.6 ms PyTorch conv took 24 ms right after convscope's GEMMs).  After the gap,
# the untimed settle calls warm the library's own threads again (bench/timing.py).
GAP = 0.11

# targets of issue 14: ratios are convscope / PyTorch (medians)
STEP_MAX = 1.2
CONV_EACH_MAX = 1.5  # every conv forward+backward
BN_MAX = 1.2  # batch norm forward+backward
INFER_BATCH_MAX = 1.0  # inference at batch 256
INFER_ONE_MAX = 1.0  # batch 1: no worse than before (0.72 in the idle reference run)
GEMM_FRACTION_MIN = 0.70
COLD_START_MAX = 0.5  # convscope predict / import torch
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "amx_tile")
BLAS_ENV_REMOVED: dict[str, str] = {}  # what bench/__main__.py unset before NumPy loaded


# ---------------------------------------------------------------------------------------------
# the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vector_extensions() -> list[str]:
    """The CPU's vector extensions among VECTOR_FLAGS, from /proc/cpuinfo's flags ([] where the
    OS does not tell)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in VECTOR_FLAGS if f in flags]
    except OSError:
        pass
    return []


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def machine(torch: Any) -> dict:
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    b = blas[0] if blas else {}
    mem = _mem_gib()
    return {"cpu": _cpu_model(), "cores": os.cpu_count(),
            "memory_gib": None if mem is None else round(mem, 1),
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "numpy": np.__version__,
            "blas": f"{b.get('internal_api', '?')} {b.get('version', '')}".strip(),
            "blas_kernel": b.get("architecture"), "blas_threads": b.get("num_threads"),
            "vector_extensions": vector_extensions(),
            "blas_internal_api": b.get("internal_api"),
            "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
            "openblas_l2_size_env": os.environ.get("OPENBLAS_L2_SIZE"),
            "blas_env_unset": dict(BLAS_ENV_REMOVED),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "jit": _numba_version() if jit.kernels() is not None else None}


def _numba_version() -> str:
    from importlib.metadata import version

    return version("numba")


def machine_line(m: dict) -> str:
    mem = f", {m['memory_gib']:.0f} GiB" if m.get("memory_gib") else ""
    kernel = f" ({m['blas_kernel']} kernel)" if m.get("blas_kernel") else ""
    unset = m.get("blas_env_unset") or {}
    if unset:
        kernel += " after unsetting " + ", ".join(f"{k}={v}" for k, v in unset.items())
    elif m.get("openblas_coretype_env"):
        kernel += f" chosen by OPENBLAS_CORETYPE={m['openblas_coretype_env']}"
    vec = ", ".join(m.get("vector_extensions") or []) or "unknown"
    return (f"{m['cpu']} ({vec}), {m['cores']} cores{mem}, {m['os']}; Python {m['python']}, "
            f"NumPy {m['numpy']} on {m['blas']}{kernel}, PyTorch {m['torch']}; "
            f"threads: BLAS {m['blas_threads']}, torch {m['torch_threads']}; compiled kernels "
            + (f"on (numba {m['jit']})" if m.get("jit") else "off"))


# ---------------------------------------------------------------------------------------------
# running the cases


def _ratio(a: Timing, b: Timing) -> float:
    return a.median_ms / b.median_ms


def run_cases(torch: Any, selected: list[C.Case], reps: int, warmup: int, log: Any,
              gap: float = 0.0, textbook: bool = True) -> list[dict]:
    rows = []
    for case in selected:
        fns = {"convscope": case.ours, "torch": case.torch}
        if case.gemm is not None:
            fns["gemm"] = case.gemm
        if case.textbook is not None:
            fns["textbook"] = case.textbook
        short = case.group == "infer"
        if not textbook:
            fns.pop("textbook", None)
        t = interleaved(fns, reps, warmup, min_seconds=0.002 if short else 0.0, gap=gap)
        row: dict[str, Any] = {"name": case.name, "group": case.group, **case.info,
                               "convscope": t["convscope"].as_dict(), "torch": t["torch"].as_dict(),
                               "ratio": _ratio(t["convscope"], t["torch"])}
        if case.flops:
            row["gflops_convscope"] = case.flops / t["convscope"].median_ms / 1e6
            row["gflops_torch"] = case.flops / t["torch"].median_ms / 1e6
        if case.images:
            row["images_per_s_convscope"] = case.images / t["convscope"].median_ms * 1e3
            row["images_per_s_torch"] = case.images / t["torch"].median_ms * 1e3
        if "textbook" in t:
            row["textbook"] = t["textbook"].as_dict()
            row["speedup_over_textbook"] = t["textbook"].median_ms / t["convscope"].median_ms
        if "gemm" in t:
            row["gemm"] = t["gemm"].as_dict()
            row["gemm_gflops"] = case.gemm_flops / t["gemm"].median_ms / 1e6
            row["gemm_fraction"] = t["gemm"].median_ms / t["convscope"].median_ms
        rows.append(row)
        log(_row_text(row))
    return rows


def select_cases(torch: Any, only: str | None) -> list[C.Case]:
    rng = np.random.default_rng(0)
    out: list[C.Case] = []
    want = (lambda group: only is None or only in group)
    if want("conv"):
        for shape in C.CONV_SHAPES:
            out += C.conv_cases(torch, shape, rng)
    if want("layer"):
        out += C.layer_cases(torch, rng)
    if want("step"):
        out += C.step_cases(torch)
    if want("infer"):
        out += C.inference_cases(torch, rng)
    return out


def run_memory(threads: int, log: Any) -> dict:
    out: dict = {}
    for net in C.NETS:
        for lib in ("convscope", "torch"):
            cmd = [sys.executable, "-m", "bench.memory", net, lib, str(threads)]
            env = dict(os.environ, **({} if jit.kernels() is not None else {"CONVSCOPE_JIT": "0"}))
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                out[f"{net}/{lib}"] = {"error": proc.stderr.strip().splitlines()[-1:]}
            else:
                out[f"{net}/{lib}"] = json.loads(proc.stdout.strip().splitlines()[-1])
        ours, theirs = out[f"{net}/convscope"], out[f"{net}/torch"]
        if "step_peak_bytes" in ours and "step_peak_bytes" in theirs:
            log(f"  memory of a {net} training step: convscope {ours['step_peak_bytes'] / 2**20:.1f}"
                f" MiB, PyTorch {theirs['step_peak_bytes'] / 2**20:.1f} MiB")
    return out


# ---------------------------------------------------------------------------------------------
# the table


def _ms(t: dict) -> str:
    return f"{t['median_ms']:.3g} ({t['min_ms']:.3g}-{t['max_ms']:.3g})"


def _row_text(row: dict) -> str:
    extra = ""
    if "gflops_convscope" in row:
        extra = f"{row['gflops_convscope']:.0f} / {row['gflops_torch']:.0f}"
    elif "images_per_s_convscope" in row:
        extra = f"{row['images_per_s_convscope']:,.0f} / {row['images_per_s_torch']:,.0f} img/s"
    gemm = f"{100 * row['gemm_fraction']:.0f}%" if "gemm_fraction" in row else ""
    return (f"{row['name']:<42} {_ms(row['convscope']):>22} {_ms(row['torch']):>22} "
            f"{row['ratio']:>6.2f}  {extra:<24} {gemm:>5}")


HEADER = (f"{'work':<42} {'convscope ms':>22} {'PyTorch ms':>22} {'ratio':>6}  "
          f"{'GFLOP/s (cs / torch)':<24} {'GEMM':>5}")


def markdown(result: dict) -> str:
    """The table as Markdown (for the README)."""
    lines = ["| work | convscope ms | PyTorch ms | ratio | GFLOP/s or img/s (convscope / PyTorch) "
             "| time in GEMM |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in result["cases"]:
        extra = ""
        if "gflops_convscope" in row:
            extra = f"{row['gflops_convscope']:.0f} / {row['gflops_torch']:.0f}"
        elif "images_per_s_convscope" in row:
            extra = f"{row['images_per_s_convscope']:,.0f} / {row['images_per_s_torch']:,.0f}"
        gemm = f"{100 * row['gemm_fraction']:.0f}%" if "gemm_fraction" in row else ""
        lines.append(f"| {row['name']} | {row['convscope']['median_ms']:.3g} | "
                     f"{row['torch']['median_ms']:.3g} | {row['ratio']:.2f} | {extra} | {gemm} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# targets


def targets(result: dict) -> list[dict]:
    """Each target of the issue with the measured figure and whether it is met."""
    out = []
    rows = result["cases"]

    def add(name: str, value: float | None, limit: float, ok: bool | None, detail: str = "") -> None:
        out.append({"target": name, "value": value, "limit": limit, "met": ok, "detail": detail})

    for row in (r for r in rows if r["group"] == "step"):
        add(f"train step {row['net']}: ratio <= {STEP_MAX}", row["ratio"], STEP_MAX,
            row["ratio"] <= STEP_MAX)
    for r in (r for r in rows if r["group"] == "conv-fwdbwd"):
        add(f"{r['name']}: ratio <= {CONV_EACH_MAX}", r["ratio"], CONV_EACH_MAX,
            r["ratio"] <= CONV_EACH_MAX)
    for r in (r for r in rows if r["name"].startswith("batch norm") and r.get("kernels", True)):
        add(f"{r['name']}: ratio <= {BN_MAX}", r["ratio"], BN_MAX, r["ratio"] <= BN_MAX)
    for r in rows:
        if (r["group"].startswith("conv") and r.get("forward_gflop", 0) >= C.BIG_GFLOP
                and "gemm_fraction" in r):  # (none: a direct convolution, no GEMM)
            add(f"{r['name']}: GEMMs >= {GEMM_FRACTION_MIN:.0%} of the NumPy GEMM ceiling",
                r["gemm_fraction"], GEMM_FRACTION_MIN, r["gemm_fraction"] >= GEMM_FRACTION_MIN)
    for row in (r for r in rows if r["group"] == "infer"):
        limit = INFER_ONE_MAX if row.get("batch") == 1 else INFER_BATCH_MAX
        add(f"lenet5 inference, batch {row.get('batch')}: ratio <= {limit}", row["ratio"], limit,
            row["ratio"] <= limit)
    cold = result.get("coldstart") or {}
    if "convscope predict" in cold and "import torch" in cold:
        r = cold["convscope predict"]["median_ms"] / cold["import torch"]["median_ms"]
        add(f"convscope predict cold start < {COLD_START_MAX} x import torch", r, COLD_START_MAX,
            r < COLD_START_MAX, f"{cold['convscope predict']['median_ms']:.0f} ms vs "
            f"{cold['import torch']['median_ms']:.0f} ms")
    mem = result.get("memory") or {}
    for net in C.NETS:
        a, b = mem.get(f"{net}/convscope", {}), mem.get(f"{net}/torch", {})
        if "step_peak_bytes" in a and "step_peak_bytes" in b and b["step_peak_bytes"] > 0:
            r = a["step_peak_bytes"] / b["step_peak_bytes"]
            add(f"peak memory of a {net} step <= PyTorch's", r, 1.0, r <= 1.0,
                f"{a['step_peak_bytes'] / 2**20:.1f} MiB vs {b['step_peak_bytes'] / 2**20:.1f} MiB")
    return out


def _write_json(path: Path, data: dict) -> None:
    """Atomically: a temporary file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repetitions: under a minute")
    p.add_argument("--reps", type=int, default=None, help="repetitions per case (default 25, "
                   "quick 3)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads for both libraries (default: all cores)")
    p.add_argument("--only", default=None, help="only cases whose group contains this: conv, "
                   "layer, step, infer (memory and cold starts are skipped)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--no-coldstart", action="store_true", help="skip the cold-start runs")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON,
                   help=f"where to write every figure (default {DEFAULT_JSON.relative_to(ROOT)})")
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    p.add_argument("--no-jit", action="store_true", help="convscope without its compiled "
                   "kernels (numba), as where numba is not installed; by default they are on "
                   "where it is, as in convscope train")
    p.add_argument("--keep-blas-env", action="store_true", help="keep OPENBLAS_CORETYPE and "
                   "OPENBLAS_L2_SIZE (python -m bench unsets them for its own process, as a "
                   "user's machine has neither)")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.reps is not None and args.reps < 1:
        p.error(f"--reps must be >= 1, got {args.reps}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        print(f"bench needs torch and threadpoolctl ({exc}); pip install torch threadpoolctl",
              file=sys.stderr)
        return 2
    reps = args.reps or (3 if args.quick else 25)
    warmup = 1 if args.quick else 2

    def log(line: str) -> None:
        print(line, flush=True)

    torch.set_num_threads(args.threads)
    if jit.enable(not args.no_jit):
        jit.kernels()  # compiled (or loaded from numba's cache) before anything is timed
    result: dict[str, Any] = {"reps": reps, "quick": args.quick, "load_before": _load()}
    with threadpool_limits(limits=args.threads, user_api="blas"):
        result["machine"] = m = machine(torch)
        log(f"convscope vs PyTorch {torch.__version__} on the CPU, float32; medians of {reps} "
            "interleaved repetitions (min-max); ratio = convscope / PyTorch")
        log(f"machine: {machine_line(m)}")
        gemm, flops = C.square_gemm()
        g = interleaved({"gemm": gemm}, max(3, reps // 3), 1)["gemm"]
        result["gemm_2048"] = {**g.as_dict(), "gflops": flops / g.median_ms / 1e6}
        log(f"NumPy float32 GEMM ceiling, 2048x2048x2048: {result['gemm_2048']['gflops']:.0f} "
            "GFLOP/s\n")
        log(HEADER)
        log("-" * len(HEADER))
        result["cases"] = run_cases(torch, select_cases(torch, args.only), reps, warmup, log,
                                    GAP, textbook=not args.quick)
        for row in result["cases"]:  # each conv's rate against the square GEMM too
            if "gflops_convscope" in row and row["group"].startswith("conv"):
                row["fraction_of_square_gemm"] = (row["gflops_convscope"]
                                                  / result["gemm_2048"]["gflops"])
    log("-" * len(HEADER))
    log("GEMM: convscope's own GEMMs, replayed alone, as a share of its time")
    tb = [r for r in result["cases"] if "speedup_over_textbook" in r]
    if tb:
        log("conv fwd+bwd, convscope vs the textbook im2col (the engine before issue 6): "
            + ", ".join(f"{r['speedup_over_textbook']:.1f}x" for r in tb) + " faster")
    if args.only is None and not args.no_memory:
        result["memory"] = run_memory(args.threads, log)
    if args.only is None and not args.no_coldstart:
        result["coldstart"] = cold = _coldstart(2 if args.quick else 7, warm=not args.quick)
        for name in ("import torch", "import convscope", "convscope predict"):
            if name in cold:
                log(f"  cold start, {name}: {cold[name]['median_ms']:.0f} ms")
        if "predict_error" in cold:
            log(f"  convscope predict: {cold['predict_error']}")
    load = result["load_before"]
    if load is not None and load["other_running_processes"] > 0:
        log(f"\nnote: {load['other_running_processes']} other process(es) were running when this "
            f"run started (1-minute load average {load['load_average_1min']}): they shared the "
            "cores, figures are noisy")
    result["targets"] = targets(result)
    log("\ntargets (issue 14)")
    for t in result["targets"]:
        mark = "met" if t["met"] else "NOT met"
        detail = f" ({t['detail']})" if t["detail"] else ""
        log(f"  {t['target']}: {t['value']:.2f} -> {mark}{detail}")
    if args.markdown:
        log("\n" + markdown(result))
    _write_json(args.json, result)
    log(f"\nwrote {args.json}")
    return 0


def _load() -> dict | None:
    """The 1-minute load average, and how many other processes kept running over 0.5 s (the
    fewest of five samples), or None where the OS does not tell."""
    try:
        avg = round(os.getloadavg()[0], 2)
        others = []
        for _ in range(5):
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
            others.append(max(0, running - 1))
            time.sleep(0.1)
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    return {"load_average_1min": avg, "other_running_processes": min(others)}


def _coldstart(reps: int, warm: bool) -> dict:
    from .coldstart import measure

    return measure(reps, str(ROOT), warm)

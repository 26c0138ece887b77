"""Accuracy benchmark (not a CI test): the ``fashion`` preset on the full Fashion-MNIST.

Runs the real main job, ``convscope train``, on the 60,000 training images (6,000 held out to
validate each epoch, the best epoch kept) and reports the test accuracy on the 10,000 test
images and the wall time.  The target is 92.5%: small two-conv nets with batch norm reach
0.916-0.934 on this set.

    python -m bench.fashion_full                      # the recipe below; about 20 minutes on 2 cores
    python -m bench.fashion_full --epochs 5 --threads 1 --out runs/bench-quick
    python -m bench.fashion_full --resume runs/bench-fashion   # after a kill or Ctrl-C
    python -m bench.fashion_full --preset resnet      # resnet9, target 94.0% in 45 minutes
    python -m bench.fashion_full --preset resnet --epochs 1 --limit 5000   # a quick check

The data comes through convscope's data layer (``fashion-mnist``: ``--data-dir``,
``$CONVSCOPE_DATA``, the user cache or ``/usr/share/datasets/fashion-mnist``, else the official
download).  Prints one JSON line with the result; exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from convscope.cli import main as convscope

TARGET = 0.925
RECIPE = {"--arch": "fashion", "--data": "fashion-mnist", "--epochs": "20",
          "--batch-size": "128", "--optimizer": "adam", "--lr": "0.002",
          "--schedule": "cosine", "--label-smoothing": "0.1", "--augment": "flip",
          "--val-fraction": "0.1", "--seed": "0"}
#: ``--preset resnet`` (issue 10): the ``resnet9`` preset (Page's ResNet-9 at a quarter width,
#: 412,666 parameters), SGD with Nesterov momentum, a warm-up and a cosine schedule, crops and
#: flips, batches of 64; the target is 94.0% within 45 minutes on the 2-core machine.  The test
#: images are evaluated once as they are and once with flip test-time augmentation (each image's
#: probabilities averaged with its mirror image's, as Page's ResNet-9 evaluates); the report has
#: both, and the target is checked on the recipe's own evaluation, the flip one.
RESNET_RECIPE = {"--arch": "resnet9", "--data": "fashion-mnist", "--epochs": "13",
                 "--batch-size": "64", "--optimizer": "sgd", "--lr": "0.05", "--momentum": "0.9",
                 "--nesterov": None, "--weight-decay": "0.0005", "--schedule": "cosine",
                 "--warmup": "0.5", "--label-smoothing": "0.1", "--augment": "crop=2+flip",
                 "--val-fraction": "0.1", "--tta": "flip", "--seed": "0"}
PRESETS = {"fashion": (RECIPE, TARGET, "runs/bench-fashion"),
           "resnet": (RESNET_RECIPE, 0.94, "runs/bench-resnet")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fashion_full", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), default="fashion",
                   help="the recipe: fashion (the fashion preset) or resnet (resnet9) "
                        "(default: %(default)s)")
    p.add_argument("--epochs", help="(default: the recipe's)")
    p.add_argument("--seed", default=RECIPE["--seed"], help="(default: %(default)s)")
    p.add_argument("--data-dir", help="where the Fashion-MNIST files are")
    p.add_argument("--threads", type=int, help="BLAS threads (default: all)")
    p.add_argument("--limit", type=int, help="only the first N training and test images (a "
                                             "quick check of the recipe, not the benchmark)")
    p.add_argument("--out", help="run folder (default: runs/bench-<preset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--target", type=float, help="(default: the recipe's, 0.925 or 0.94)")
    args = p.parse_args(argv)
    chosen, target, folder = PRESETS[args.preset]
    args.target = target if args.target is None else args.target
    out = Path(args.out or folder)
    if args.resume:
        cmd = ["train", "--resume", str(out)]
    else:
        recipe = {**chosen, "--epochs": str(args.epochs or chosen["--epochs"]),
                  "--seed": str(args.seed), "--out": str(out)}
        if args.data_dir:
            recipe["--data-dir"] = args.data_dir
        if args.limit:
            recipe["--limit"] = str(args.limit)
        cmd = ["train", *[x for kv in recipe.items() for x in kv if x is not None]]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print("convscope " + " ".join(cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    rc = convscope(cmd)
    wall = time.perf_counter() - start
    if rc != 0:
        return rc
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scored = results.get("test_accuracy_tta", results["test_accuracy"])  # the recipe's own
    report = {"arch": chosen["--arch"], "data": "fashion-mnist",
              "test_accuracy": results["test_accuracy"],
              "tta": results.get("tta", "none"),
              "test_accuracy_tta": results.get("test_accuracy_tta"),
              "target": args.target, "met": scored >= args.target,
              "epochs": results["epochs"], "best_epoch": results["best_epoch"],
              "best_val_accuracy": results["best_val_accuracy"],
              "wall_seconds": round(wall, 1), "run_seconds": results["seconds"],
              "train_seconds": round(sum(e["seconds"] for e in epochs), 1),
              "images_per_second": round(sum(e["images_per_second"] for e in epochs)
                                         / max(len(epochs), 1), 1),
              "run_folder": str(out)}
    print(json.dumps(report))
    tta_note = ("" if report["test_accuracy_tta"] is None else
                f", {100 * report['test_accuracy_tta']:.2f}% with {report['tta']} test-time "
                "augmentation")
    print(f"{chosen['--arch']} on Fashion-MNIST: test accuracy {100 * report['test_accuracy']:.2f}%"
          f"{tta_note} (target {100 * args.target:.1f}%: {'met' if report['met'] else 'missed'}) "
          f"in {wall / 60:.1f} min", file=sys.stderr)
    return 0 if report["met"] else 1


if __name__ == "__main__":
    sys.exit(main())

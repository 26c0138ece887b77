"""``convscope serve``: the explorer on http://127.0.0.1:8000/, where a dropped or drawn image is
run by the NumPy engine and every panel updates.

::

    convscope serve runs/x
    convscope serve runs/x/model.safetensors --port 8080
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import CommandError
from ..inspect.explore.server import make_server
from ..inspect.explore.source import load_target
from ..train.control import sigint_raises

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="serve the explorer locally: drop or draw an image, see every layer",
        description="Serve the explorer of a model on this machine. Drop an image or draw a "
        "digit in the page:\nthe engine runs it and every panel shows the result. "
        "POST /api/predict takes an image\nfile's bytes and answers JSON {\"top\": [{\"label\", "
        "\"probability\"}, ...]} as convscope predict.\nListens on 127.0.0.1 only, unless "
        "--host is given.",
        epilog="examples:\n  convscope serve runs/x\n"
        "  curl --data-binary @digit.png http://127.0.0.1:8000/api/predict")
    p.add_argument("model", metavar="MODEL|RUN", help="a model file (.safetensors) or a run folder")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0: any free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--data-dir", metavar="DIR", help="where the full datasets' files are")
    p.add_argument("--verbose", action="store_true", help="log every request")
    return p


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be 0 to 65535, got {args.port}")
    target = load_target(args.model, args.data_dir)
    if target.x_test is None:
        raise CommandError(f"serve needs the model's test images as the first probes: "
                           f"{target.note or 'the model file names no dataset'}")
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else None
    try:
        server = make_server(target, args.host, args.port, log=log)
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    print(f"serving the explorer of {args.model} at {server.url} (Ctrl-C stops)", flush=True)
    try:
        with sigint_raises():
            server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0

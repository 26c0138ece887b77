"""``convscope train --serve``: the live view's options and its server around the training
(the server itself: inspect/explore/live.py)."""

from __future__ import annotations

import argparse
import threading
from typing import Any

import numpy as np

from ..inspect.explore.live import LiveRun, LiveServer
from ..train.control import sigint_raises
from ._common import CommandError, say

__all__ = ["add_serve", "serve_args", "Live"]


def add_serve(group: Any) -> None:
    group.add_argument("--serve", action="store_true",
                       help="show the run live in the browser: the explorer of the latest epoch "
                       "(curves, filters, activation maps), refreshed each epoch; it keeps "
                       "serving the final model after training, until Ctrl-C")
    group.add_argument("--port", type=int, default=8000,
                       help="with --serve: TCP port (default: 8000; 0: any free one)")
    group.add_argument("--host", default="127.0.0.1",
                       help="with --serve: address to listen on (default: 127.0.0.1, this "
                       "machine only)")


def serve_args(args: argparse.Namespace) -> list[str]:
    """The --serve options again, for the command line of a worker (--workers launches one)."""
    if not getattr(args, "serve", False):
        return []
    return ["--serve", "--port", str(args.port), "--host", str(args.host)]


class Live:
    """The live view of one run: ``Live.start(...)`` binds and serves in a daemon thread (None
    without --serve) and hands ``callback`` to the trainer; ``Live.stay(live)`` serves the final
    model until Ctrl-C.  A run that stops early (Ctrl-C, a NaN loss) leaves with its process."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.callback = LiveRun(server.publish)
        self.thread = threading.Thread(target=server.serve_forever, name="convscope-live",
                                       daemon=True)
        self.thread.start()

    @classmethod
    def start(cls, args: argparse.Namespace, trainer: Any, x_test: np.ndarray,
              y_test: np.ndarray) -> "Live | None":
        """With --serve: bind, print the URL, serve in a thread and add the callback to
        ``trainer`` (the page's probes and confusion matrix: the test images); else None."""
        if not getattr(args, "serve", False):
            return None
        if not 0 <= args.port <= 65535:
            raise CommandError(f"--port must be 0 to 65535, got {args.port}")
        if x_test is None or not len(x_test):
            raise CommandError("--serve needs test images for the page's probes; this dataset "
                               "has none")
        model, norm, name = trainer.model, trainer.normalizer, trainer.run_dir.name
        info = trainer.model_info
        try:
            server = LiveServer(
                model, trainer.classes, lambda p: norm(p).astype(model.dtype, copy=False),
                x_test, y_test, args.host, args.port, title=f"convscope train: {name}",
                info={"model": name, "dataset": info.get("dataset"),
                      "architecture": info.get("arch_name")},
                label_smoothing=trainer.config.label_smoothing)
        except OSError as exc:
            raise CommandError(f"--serve: cannot listen on {args.host}:{args.port}: "
                               f"{exc.strerror or exc}") from None
        live = cls(server)
        trainer.callbacks.insert(0, live.callback)  # first: the end is shown at once
        print(f"live view: {server.url} (refreshes each epoch)", flush=True)
        return live

    @staticmethod
    def stay(live: "Live | None") -> None:
        """After training (``live`` None: no --serve): serve the final model until Ctrl-C (the
        trainer's own Ctrl-C handler is gone by now), then stop."""
        if live is None:
            return
        live.callback.finish()  # everything is written: the page says the run is over
        print(f"live view: serving the final model at {live.server.url}; Ctrl-C stops",
              flush=True)
        try:
            with sigint_raises():
                while live.thread.is_alive():
                    live.thread.join(0.5)
        except KeyboardInterrupt:
            say("live view stopped")
        finally:
            live.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

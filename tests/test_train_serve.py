"""``convscope train --serve``: the explorer of the run, live.  A real training in a subprocess
on port 0: /api/run reports the epochs as they land, the page names its epoch and is built from
that epoch's weights, a foreign Host is refused, a POST is refused unread, the final model stays
on show until Ctrl-C.  The process is always stopped (a timeout, then kill)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np
import pytest

from convscope.data import Normalizer, load_dataset
from convscope.formats.architecture import build_model
from convscope.inspect.explore import floats
from convscope.inspect.explore.live import LiveRun, LiveServer, snapshot_of

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3


def _get(port: int, path: str, host: str | None = None, method: str = "GET",
         body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Host": host} if host is not None else {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _page_data(html: bytes) -> dict[str, Any]:
    m = re.search(rb'<script type="application/json" id=cs-data>(.*?)</script>', html, re.S)
    assert m, "no data in the page"
    return json.loads(m.group(1).replace(b"<\\/", b"</"))


def _stopped(run: dict[str, Any], seconds: float = 30) -> int:
    """The exit status of the run after a Ctrl-C; if it does not end in ``seconds``, a
    SIGABRT prints its threads' stacks and the test fails with them."""
    proc = run["proc"]
    try:
        return proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        proc.wait(10)
        time.sleep(0.5)
        pytest.fail("no exit after Ctrl-C; stderr:\n" + "".join(run["err"])[-6000:])


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    run_dir = tmp_path_factory.mktemp("runs") / "live"
    # PYTHONFAULTHANDLER: a SIGABRT prints every thread's stack (see _stopped)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
           "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "convscope", "train", "--epochs", str(EPOCHS), "--limit", "300",
         "--seed", "0", "--out", str(run_dir), "--serve", "--port", "0", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        # started as a non-interactive shell starts a background job, SIGINT ignored: the
        # command still stops on it (it failed so, run from `make test &`, until sigint_raises)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda s=s, b=b: b.extend(iter(s.readline, "")),
                                daemon=True) for s, b in ((proc.stdout, out), (proc.stderr, err))]
    for t in readers:
        t.start()
    try:
        deadline = time.monotonic() + 120
        port = None
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"live view: http://127\.0\.0\.1:(\d+)/", "".join(out))
            port = int(m.group(1)) if m else None
            time.sleep(0.1)
        assert port, f"no live view URL printed; stdout {out}, stderr {err}"
        yield {"proc": proc, "port": port, "out": out, "err": err, "dir": run_dir}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for t in readers:
            t.join(5)


def _wait_for(port: int, done: bool, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = _get(port, "/api/run")
        assert status == 200, body
        info = json.loads(body)
        if (info["done"] if done else info["epoch"] >= 1):
            return info
        time.sleep(0.3)
    raise AssertionError(f"/api/run never reported {'the end' if done else 'epoch 1'}: {info}")


def test_the_live_view_follows_the_run(live_run: dict[str, Any]) -> None:
    port = live_run["port"]
    info = _wait_for(port, done=False)
    assert info["epochs"] == EPOCHS and (info["status"] == "training" or info["done"])
    assert {"train_loss", "train_ce", "val_loss", "val_accuracy"} <= set(info["last"])
    status, html = _get(port, "/")
    assert status == 200
    data = _page_data(html)
    shown = data["watch"]["epoch"]
    assert shown >= info["epoch"] >= 1  # built from the latest snapshot when asked
    assert re.search(rf"<title>convscope train: live \(epoch {shown} of {EPOCHS}[,)]".encode(),
                     html)
    assert len(data["run"]["history"]) == shown and data["watch"]["api"] == "api/run"
    assert b"http://" not in html.replace(b"http://127.0.0.1", b"")  # no network in the page


@pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:8000", ""])
def test_a_foreign_host_is_refused(live_run: dict[str, Any], host: str) -> None:
    for path in ("/", "/api/run"):
        status, body = _get(live_run["port"], path, host=host)
        assert status == 403 and b"DNS rebinding" in body
    assert _get(live_run["port"], "/api/run", host=f"localhost:{live_run['port']}")[0] == 200


def test_requests_are_bounded(live_run: dict[str, Any]) -> None:
    port = live_run["port"]
    status, body = _get(port, "/api/run", method="POST", body=b"x" * 1000)
    assert status == 404 and "no API" in json.loads(body)["error"]
    status, body = _get(port, "/api/predict", method="POST", body=b"x")
    assert status == 404
    status, body = _get(port, "/../etc/passwd")
    assert status == 404 and "the live view is at /" in json.loads(body)["error"]


def test_the_final_model_stays_until_ctrl_c(live_run: dict[str, Any]) -> None:
    port, proc = live_run["port"], live_run["proc"]
    info = _wait_for(port, done=True)
    assert info["status"] == "completed" and info["epoch"] == EPOCHS
    deadline = time.monotonic() + 120
    while "Ctrl-C stops" not in "".join(live_run["out"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    out = "".join(live_run["out"])
    assert "live view: serving the final model" in out, out
    paths = dict(re.findall(r"^(explorer|model|report): (.+)$", out, re.M))
    assert Path(paths["explorer"]).is_file() and Path(paths["model"]).is_file()
    status, html = _get(port, "/")
    data = _page_data(html)
    assert status == 200 and data["watch"]["done"] is True
    assert f"epoch {EPOCHS} of {EPOCHS}, completed".encode() in html
    assert data["run"]["best_epoch"] == json.loads((live_run["dir"] / "results.json")
                                                   .read_text())["best_epoch"]
    proc.send_signal(signal.SIGINT)
    assert _stopped(live_run) == 0
    time.sleep(0.2)
    assert "live view stopped" in "".join(live_run["err"])


@contextlib.contextmanager
def _serving() -> Iterator[tuple[LiveServer, Any]]:
    """(a LiveServer of a fresh LeNet-5 on the bundled digits, serving from a thread, the
    model); shut down after."""
    ds = load_dataset("digits")
    norm = Normalizer.fit(ds.x_train[:200])
    model = build_model("lenet5", ds.input_shape, ds.num_classes, seed=0)
    server = LiveServer(model, ds.classes, lambda p: norm(p).astype(np.float32),
                        ds.x_test[:60], ds.y_test[:60], port=0, title="t")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, model
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_pages_come_from_snapshots_not_the_training_model() -> None:
    """In one process: the page is built once per snapshot, from the snapshot's weights on the
    server's own copy of the model, even when the training model has moved on."""
    with _serving() as (server, model):
        port = server.server_address[1]
        status, body = _get(port, "/")  # before training begins: a page that reloads itself
        assert status == 200 and b"http-equiv=refresh" in body and b"starting" in body
        trainer = SimpleNamespace(model=model, epoch=1, config=SimpleNamespace(epochs=5),
                                  history=[{"epoch": 1, "train_loss": 2.0, "val_loss": 1.9,
                                            "val_accuracy": 0.3}])
        cb = LiveRun(server.publish)
        cb.on_epoch_end(trainer, trainer.history[-1])
        weight = model.params["0.weight"].copy()
        model.params["0.weight"][...] += 1.0  # training goes on: the page must not see it
        first = _get(port, "/")[1]
        assert _get(port, "/")[1] == first and server.builds == 1
        shown = floats(_page_data(first)["model"]["layers"][0]["conv"]["weight"])
        np.testing.assert_array_equal(shown, weight)
        trainer.epoch = 2
        trainer.history.append({"epoch": 2, "train_loss": 1.0, "val_loss": 0.9,
                                "val_accuracy": 0.3})
        server.publish(snapshot_of(trainer))
        second = _get(port, "/")[1]
        assert server.builds == 2 and b"(epoch 2 of 5)" in second
        np.testing.assert_array_equal(
            floats(_page_data(second)["model"]["layers"][0]["conv"]["weight"]), weight + 1.0)
        assert json.loads(_get(port, "/api/run")[1])["best_epoch"] == 2  # same accuracy, lower loss


def _until(pg: Any, words: str, timeout: float = 30) -> None:
    """Wait until the page has reloaded itself with ``words`` in its title and has started (a
    polling loop here: the page's CSP forbids the eval that wait_for_function polls with)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if words in pg.title() and pg.evaluate("window.convscope !== undefined"):
                return
        except Exception:  # noqa: BLE001 - the page is between two documents
            pass
        time.sleep(0.2)
    raise AssertionError(f"the page never showed {words!r}: {pg.title()!r}")


def test_the_page_reloads_itself_and_keeps_the_view(tmp_path: Path) -> None:
    """In Chromium: the served page polls /api/run, reloads when the next epoch lands, keeps the
    selected cell, and says when the run has ended."""
    from explore_common import CHROMIUM, CHROMIUM_ARGS

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with _serving() as (server, model):
        trainer = SimpleNamespace(model=model, epoch=1, config=SimpleNamespace(epochs=2),
                                  history=[{"epoch": 1, "train_loss": 2.0, "val_loss": 1.9,
                                            "val_accuracy": 0.3}])
        cb = LiveRun(server.publish)
        cb.on_epoch_end(trainer, trainer.history[-1])
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                pg = browser.new_page()
                errors: list[str] = []
                foreign: list[str] = []
                pg.on("pageerror", lambda e: errors.append(str(e)))
                pg.on("request", lambda r: None if r.url.startswith(
                    (server.url, "data:", "blob:")) else foreign.append(r.url))
                pg.goto(server.url)
                pg.wait_for_function("window.convscope !== undefined")
                assert "epoch 1 of 2" in pg.title()
                assert "Live: epoch 1 of 2" in pg.inner_text("[data-testid=watch]")
                pg.evaluate("window.convscope.select(3, 3, 4, 5)")
                trainer.epoch = 2
                trainer.history.append({"epoch": 2, "train_loss": 1.0, "val_loss": 0.9,
                                        "val_accuracy": 0.4})
                cb.on_epoch_end(trainer, trainer.history[-1])
                _until(pg, "epoch 2 of 2")
                got = pg.evaluate("window.convscope.state()")
                assert (got["layer"], got["filter"], got["y"], got["x"]) == (3, 3, 4, 5)
                cb.on_train_end(trainer, SimpleNamespace(status="completed"))
                cb.finish()
                _until(pg, "completed")
                assert "Training ended (completed)" in pg.inner_text("[data-testid=watch]")
                assert errors == [] and foreign == []
            finally:
                browser.close()

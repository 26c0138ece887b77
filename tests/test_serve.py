"""``convscope serve``: POST /api/predict equals ``convscope predict``; bad, huge and non-image
uploads get a 4xx with one line and the server keeps serving; a foreign Host header is refused;
200 requests, 8 at a time, are all answered.  The server runs on port 0 in a thread and is always
stopped."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from convscope.cli import main
from convscope.inspect.explore import load_target
from convscope.inspect.explore.server import make_server
from explore_common import make_run

Image = pytest.importorskip("PIL.Image", reason="uploads are read with Pillow")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    run = make_run(tmp_path_factory.mktemp("runs") / "lenet5-digits", images=800)
    target = load_target(run)
    server = make_server(target, "127.0.0.1", 0, max_bytes=200_000, max_pixels=1_000_000)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"server": server, "port": server.server_address[1], "target": target, "run": run,
               "tmp": tmp_path_factory.mktemp("uploads")}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _request(port: int, method: str, path: str, body: bytes | None = None,
             host: str | None = None) -> tuple[int, Any, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Host": host} if host is not None else {}
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        ctype = r.getheader("Content-Type") or ""
        return r.status, json.loads(raw) if ctype.startswith("application/json") else None, raw
    finally:
        conn.close()


def _png(array: np.ndarray, path: Path | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    if path is not None:
        path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _alive(port: int) -> None:
    status, _, raw = _request(port, "GET", "/")
    assert status == 200 and b'id=cs-data' in raw


def test_the_page_is_the_explorer_with_an_upload(served: dict[str, Any]) -> None:
    status, _, raw = _request(served["port"], "GET", "/")
    assert status == 200 and b'"live":true' in raw and b"data-testid=drop" in raw
    assert b"http://" not in raw.replace(b"http://127.0.0.1", b"")


def test_predict_api_equals_convscope_predict(served: dict[str, Any],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    t, port, tmp = served["target"], served["port"], served["tmp"]
    for i in (0, 5, 17):
        path = tmp / f"digit{i}.png"
        body = _png(255 - t.x_test[i, 0], path)  # black on white: predict inverts it
        status, got, _ = _request(port, "POST", "/api/predict", body)
        assert status == 200, got
        assert main(["predict", str(t.run_dir / "model.safetensors"), str(path), "--json"]) == 0
        (want,) = json.loads(capsys.readouterr().out)
        assert [x["label"] for x in got["top"]] == want["labels"]
        assert [x["probability"] for x in got["top"]] == want["probabilities"]
        assert got["inverted"] is want["inverted"] is True
        probs = t.saved.predict_proba(t.x_test[i:i + 1])[0]
        assert got["image"]["pred"] == int(np.argmax(probs)) == want["indices"][0]
        assert len(got["image"]["outputs"]) == len(t.saved.model.layers)
    status, got, _ = _request(port, "POST", "/api/predict?k=1", _png(t.x_test[0, 0]))
    assert status == 200 and len(got["top"]) == 1


@pytest.mark.parametrize("name, body, status, words", [
    ("text", b"hello, not an image", 415, "not an image file"),
    ("empty", b"", 400, "empty upload"),
    ("truncated", None, 422, "cannot read image"),
    ("many pixels", None, 413, "1,000,000"),
])
def test_bad_uploads_get_a_4xx_and_the_server_goes_on(served: dict[str, Any], name: str,
                                                      body: bytes | None, status: int,
                                                      words: str) -> None:
    if name == "truncated":
        body = _png(served["target"].x_test[0, 0])[:60]
    elif name == "many pixels":
        body = _png(np.zeros((1100, 1000), np.uint8))  # compresses to a few KiB
    got_status, got, _ = _request(served["port"], "POST", "/api/predict", body)
    assert got_status == status, got
    assert words in got["error"] and "\n" not in got["error"]
    _alive(served["port"])


def test_an_upload_over_the_byte_limit_is_refused_before_it_is_read(served: dict[str, Any]
                                                                    ) -> None:
    with socket.create_connection(("127.0.0.1", served["port"]), timeout=30) as s:
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Length: 50000000\r\n\r\n")
        chunks = []
        while chunk := s.recv(65536):  # the server closes the connection after a refusal
            chunks.append(chunk)
    reply = b"".join(chunks).decode("utf-8")
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "50,000,000 bytes; the limit is 200,000" in reply
    status, got, _ = _request(served["port"], "POST", "/api/predict?k=0", b"x")
    assert status == 400 and "k must be" in got["error"]
    assert _request(served["port"], "GET", "/nothing")[0] == 404
    _alive(served["port"])


@pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:8000", "127.0.0.1.nip.io",
                                  ""])
def test_a_foreign_host_header_is_refused(served: dict[str, Any], host: str) -> None:
    status, got, _ = _request(served["port"], "GET", "/", host=host)
    assert status == 403 and "DNS rebinding" in got["error"]
    status, got, _ = _request(served["port"], "POST", "/api/predict", b"x", host=host)
    assert status == 403
    for ok in (f"127.0.0.1:{served['port']}", f"localhost:{served['port']}", "[::1]:80"):
        assert _request(served["port"], "GET", "/", host=ok)[0] == 200


def test_200_requests_8_at_a_time(served: dict[str, Any]) -> None:
    t, port = served["target"], served["port"]
    bodies = [_png(t.x_test[i, 0]) for i in range(10)]
    want = [t.saved.classes[int(np.argmax(p))] for p in t.saved.predict_proba(t.x_test[:10])]

    def one(n: int) -> tuple[int, str]:
        status, got, _ = _request(port, "POST", "/api/predict?k=2", bodies[n % 10])
        return status, got["top"][0]["label"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(200)))
    assert [s for s, _ in results] == [200] * 200
    assert [lab for _, lab in results] == [want[n % 10] for n in range(200)]


def test_serve_command_refuses_a_bad_port(served: dict[str, Any],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(served["run"]), "--port", "70000"]) == 1
    assert "--port must be 0 to 65535, got 70000" in capsys.readouterr().err


def test_ctrl_c_stops_serve_started_with_sigint_ignored(served: dict[str, Any]) -> None:
    """As a non-interactive shell starts a background job (SIGINT ignored, which Python keeps):
    "Ctrl-C stops" still holds."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "convscope", "serve", str(served["run"]),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=root,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        line = proc.stdout.readline()  # "serving the explorer of ... at URL (Ctrl-C stops)"
        port = int(re.search(r"127\.0\.0\.1:(\d+)/", line).group(1))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "stopped" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)

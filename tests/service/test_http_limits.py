"""Oversized and misrouted bodies against a live uvicorn on 127.0.0.1, with the clients users have.

urllib and httpx send the whole body before they read the answer (no `Expect: 100-continue`). A
server that answers from the Content-Length and closes while the body is still arriving resets the
connection, and the client never sees the JSON. The bodies here are 16 MiB, far above what the
loopback socket buffers hold, so without the drain these tests see "connection reset".
"""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import httpx
import pytest
import uvicorn

from tests.service.conftest import make_app, png, random_rgb

LIMIT = 64 * 1024
BIG = 16 * 1024 * 1024
BOUNDARY = "histoserve-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _multipart(payload: bytes, name: str = "files") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + payload + f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.fixture(scope="module", params=["httptools", "h11"])
def live(request, bundles, tmp_path_factory):
    """The service under uvicorn in a thread (each HTTP implementation uvicorn offers), small body limit."""
    app = make_app(bundles["store"], tmp_path_factory.mktemp("limits-state"), max_upload_bytes=LIMIT,
                   max_wait_ms=2.0)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=request.param, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield {"url": f"http://127.0.0.1:{port}", "app": app}
    server.should_exit = True
    thread.join(30)


def _urllib(url: str, body: bytes, content_type: str = MULTIPART) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_urllib_reads_the_413_of_an_oversized_upload(live):
    status, body = _urllib(live["url"] + "/classify", _multipart(b"\0" * BIG))
    assert status == 413
    assert body["error"]["code"] == "payload_too_large" and str(LIMIT) in body["error"]["message"]


def test_urllib_reads_the_404_of_a_big_body_to_an_unknown_route(live):
    status, body = _urllib(live["url"] + "/no/such/route", b"\0" * BIG, "application/octet-stream")
    assert status == 404
    assert body["error"]["code"] == "not_found"


def test_httpx_reads_the_413_and_keeps_its_connection(live):
    with httpx.Client(base_url=live["url"], timeout=60) as client:
        r = client.post("/classify", content=_multipart(b"\0" * BIG), headers={"Content-Type": MULTIPART})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        # The drained connection is reusable: the next request on it is answered normally.
        ok = client.post("/classify", files=[("files", ("a.png", png(random_rgb(0)), "image/png"))])
        assert ok.status_code == 200, ok.text


def test_httpx_reads_the_413_of_a_chunked_upload(live):
    def chunks():
        # well-formed multipart (a file part that goes on and on), so that only the size can refuse it:
        # raw zeros would be refused as malformed (400) whenever the parser sees them before the limit
        head, tail = _multipart(b"").split(b"\r\n--" + BOUNDARY.encode() + b"--")
        yield head
        for _ in range(BIG // (256 * 1024)):
            yield b"\0" * (256 * 1024)
        yield b"\r\n--" + BOUNDARY.encode() + b"--" + tail

    with httpx.Client(base_url=live["url"], timeout=60) as client:
        r = client.post("/classify", content=chunks(), headers={"Content-Type": MULTIPART})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"


def test_httpx_reads_the_405_and_the_404_of_big_bodies(live):
    with httpx.Client(base_url=live["url"], timeout=60) as client:
        r = client.post("/healthz", content=b"\0" * BIG)
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
        r = client.put("/nowhere", content=b"\0" * BIG)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_limits_are_per_route(live):
    limits = live["app"].state.body_limits
    body = _multipart(b"\0" * (2 * LIMIT))  # over the default limit
    limits["/classify"] = 4 * LIMIT
    try:
        with httpx.Client(base_url=live["url"], timeout=60) as client:
            r = client.post("/classify", content=body, headers={"Content-Type": MULTIPART})
            assert r.status_code == 415, r.text  # read whole, then refused for what it is, not for its size
            r = client.post("/adapt", content=body, headers={"Content-Type": MULTIPART})
            assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    finally:
        del limits["/classify"]

import asyncio
import threading

import pytest

from bench.load import check_loopback, encode, request_bytes, run_spec


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/classify", "http://localhost:1/x", "http://127.9.9.9/x",
                                 "http://[::1]:8000/x"])
def test_loopback_targets_are_allowed(url):
    check_loopback(url)


@pytest.mark.parametrize("url", ["http://10.0.0.1:8000/classify", "http://192.168.1.2/x", "http://example.com/x",
                                 "http://8.8.8.8/x"])
def test_other_targets_are_refused(url):
    with pytest.raises(ValueError, match="loopback"):
        check_loopback(url)
    with pytest.raises(ValueError, match="loopback"):
        run_spec({"url": url, "bodies": [{"data": {"a": "b"}}], "concurrency": 1, "requests": 1, "seconds": 1})


def test_encode_builds_one_multipart_body_with_repeated_fields(tmp_path):
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG fake bytes")
    body, content_type = encode("http://127.0.0.1/adapt", {"files": [["files", str(png)], ["files", str(png)]],
                                                           "data": {"model": "m/1", "labels": ["x", "y"]}})
    assert content_type.startswith("multipart/form-data; boundary=")
    assert body.count(b'name="files"; filename="a.png"') == 2
    assert body.count(b'name="labels"') == 2
    assert b"\x89PNG fake bytes" in body and b"m/1" in body


def test_request_bytes_are_one_http11_post():
    raw = request_bytes("http://127.0.0.1:8000/classify?x=1", b"abc", "text/plain")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.splitlines() == [b"POST /classify?x=1 HTTP/1.1", b"Host: 127.0.0.1:8000", b"Content-Type: text/plain",
                                 b"Content-Length: 3"]
    assert body == b"abc"


@pytest.fixture
def tiny_http_server():
    """A loopback server that answers every second request and closes after each answer: the client must
    reconnect, count the dropped request as a connection error and keep going."""
    served = []

    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                     .split(b":")[1])
        await reader.readexactly(length)
        served.append(length)
        if len(served) % 2:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        writer.close()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x", served
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_client_reconnects_and_counts_dropped_requests(tiny_http_server):
    url, served = tiny_http_server
    result = run_spec({"url": url, "bodies": [{"data": {"a": "b"}}], "concurrency": 1, "requests": 6, "seconds": 30,
                       "timeout": 5})
    assert len(served) == 6
    assert result["ok"] == 3 and result["statuses"]["200"] == 3
    assert result["statuses"]["exception:ConnectionResetError"] == 3
    assert result["latency"]["n"] == 3

"""The load generator: `python -m bench.load SPEC.json` prints one JSON summary on stdout.

It runs in its own process so that its CPU time is not the server's, and so that the
figures are what a client on the same machine sees. Each run is bounded twice, by a
request count and by seconds, and only ever talks to loopback addresses.

The spec (JSON): `url`; `bodies`, a list of `{"files": [[field, path], ...], "data": {name: value
or [values]}}` sent in turn; `concurrency` (requests in flight); `requests`; `seconds`; `warmup`
(requests sent first and not counted); `timeout` (seconds per request). Each request, multipart
body and HTTP head, is encoded once (by httpx, as its clients send forms) before the clock starts;
the client then writes those bytes on keep-alive connections and parses the answers with httptools,
on uvloop. It shares the machine's cores with the server, so what it spends per request (reported
as `client_cpu_s`) is kept small: 0.36 ms per /classify request in `make bench`, where an httpx
client spent 1.52 ms.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import mimetypes
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httptools
import httpx
import uvloop

from .stats import summarize_ms

# Error bodies kept per run: enough to say what went wrong without copying thousands of them.
MAX_ERROR_SAMPLES = 5


def check_loopback(url: str) -> None:
    """Refuse any target that is not this machine's loopback interface."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"the load generator only targets loopback addresses, not {host!r}")


def encode(url: str, body: dict) -> tuple[bytes, str]:
    """One multipart/form-data body and its content type, encoded the way httpx sends forms."""
    files = []
    for field, path in body.get("files", []):
        path = Path(path)
        files.append((field, (path.name, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "image/png")))
    request = httpx.Request("POST", url, data=body.get("data") or {}, files=files)
    return request.read(), request.headers["Content-Type"]


def request_bytes(url: str, content: bytes, content_type: str) -> bytes:
    """One whole HTTP/1.1 POST, head and body, built once so that sending it is a single write."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = (f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(content)}\r\n\r\n")
    return head.encode("latin-1") + content


class _Response:
    """httptools' C parser fed from the socket: the client spends microseconds, not httpx's milliseconds,
    per response, so that the CPU the two share goes to the server under test."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.complete = False

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.complete = True


class _Connection:
    """One keep-alive connection; reopened after the server closes it or after any error."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(request)
            response = _Response()
            while not response.complete:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionResetError("the server closed the connection before answering")
                response.parser.feed_data(data)
        except BaseException:
            self.close()
            raise
        if not response.parser.should_keep_alive():
            self.close()
        return response.parser.get_status_code(), b"".join(response.body)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _run(url: str, bodies: list[bytes], *, concurrency: int, requests: int, seconds: float,
               timeout: float, record: bool) -> dict:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    samples: list[str] = []
    next_index = 0
    deadline = time.monotonic() + seconds
    parts = urlsplit(url)

    async def worker() -> None:
        nonlocal next_index
        connection = _Connection(parts.hostname, parts.port or 80)
        while next_index < requests and time.monotonic() < deadline:
            request = bodies[next_index % len(bodies)]
            next_index += 1
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    code, body = await connection.post(request)
                status, text = str(code), body.decode("utf-8", "replace")
            except (OSError, TimeoutError, httptools.HttpParserError) as e:  # refused, reset, timed out
                status, text = f"exception:{type(e).__name__}", str(e)
            elapsed = time.perf_counter() - started
            if not record:
                continue
            statuses[status] += 1
            if status.startswith("2"):  # 200, or 201 for a created adapter
                latencies.append(elapsed)
            elif len(samples) < MAX_ERROR_SAMPLES:
                samples.append(f"{status}: {text[:300]}")
        connection.close()

    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    ok = len(latencies)
    return {"concurrency": concurrency, "sent": sum(statuses.values()), "ok": ok, "statuses": dict(statuses),
            "error_samples": samples, "wall_s": wall, "requests_per_s": ok / wall if wall > 0 else 0.0,
            "client_cpu_s": cpu, "latency": summarize_ms(latencies),
            "stopped_by": "requests" if next_index >= requests else "seconds"}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_spec(spec: dict) -> dict:
    url = spec["url"]
    check_loopback(url)
    concurrency, requests = int(spec["concurrency"]), int(spec["requests"])
    if concurrency < 1 or requests < 1 or not spec.get("bodies"):
        raise ValueError("concurrency and requests must be >= 1 and bodies must not be empty")
    bodies = [request_bytes(url, *encode(url, b)) for b in spec["bodies"]]
    timeout, seconds = float(spec.get("timeout", 120.0)), float(spec["seconds"])
    warmup = int(spec.get("warmup", 0))
    if warmup:
        uvloop.run(_run(url, bodies, concurrency=min(concurrency, warmup), requests=warmup, seconds=seconds,
                        timeout=timeout, record=False))
    return uvloop.run(_run(url, bodies, concurrency=concurrency, requests=requests, seconds=seconds,
                           timeout=timeout, record=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="JSON load spec (see the module docstring)")
    args = parser.parse_args(argv)
    result = run_spec(json.loads(args.spec.read_text(encoding="utf-8")))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

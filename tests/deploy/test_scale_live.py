"""Scaling out for real: one Debian `redis-server` and two `python -m service` replicas sharing it, on
loopback ports, with Debian's nginx running deploy/nginx/nginx.conf in front of them; and the graceful
SIGTERM of a live replica.

One Redis and one pair of replicas serve the whole module (they start in about two seconds). Every wait
is bounded, and every process started here is stopped in a finally block.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.deploy.conftest import DEPLOY, REPO_ROOT
from tests.deploy.test_live import free_port, stop, wait_for

pytestmark = pytest.mark.slow

# The smallest real bundles of the repository's store: an embedding model (for /adapt) and a classifier.
BUNDLES = ("ebhi_fewshot_dual_attention", "breakhis_cbam_resnet20")
EMBEDDER = BUNDLES[0]
WAIT_S = 60.0


def png(seed: int, size: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


SUPPORT = [("files", (f"s{i}.png", png(i), "image/png")) for i in range(4)]
QUERY = [("files", ("q.png", png(99), "image/png"))]


def status_of(url: str) -> int | None:
    """The status of a GET, or None while nothing answers."""
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None


def wait_until(what: str, check, timeout: float = WAIT_S, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"{what}: not so after {timeout:.0f} s")


# --- Redis


class Redis:
    """A redis-server on a loopback port, configured as the deployments run it (AOF, fsync per write)."""

    def __init__(self, binary: str, tmp: Path):
        self.binary, self.dir, self.port = binary, tmp, free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.dir / "redis.log", "a")  # noqa: SIM115 (redis-server holds it; closed with the process)
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for("redis-server", self._answers, self.proc, timeout=WAIT_S)

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def kill(self) -> None:
        """SIGKILL, as a crash: only what reached the AOF survives."""
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not found: install Debian's redis-server package (.ci/run does)")
    server = Redis(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.kill()


# --- replicas


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store")
    for name in BUNDLES:
        shutil.copytree(REPO_ROOT / "model_store" / name, path / name)
    return path


def start_replica(tmp: Path, store: Path, name: str, wait: bool = True, **extra: str) -> dict:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HISTOSERVE_")}
    env.update(HISTOSERVE_HOST="127.0.0.1", HISTOSERVE_PORT=str(port), HISTOSERVE_MODEL_STORE=str(store),
               HISTOSERVE_STATE_DIR=str(tmp / f"state-{name}"), HISTOSERVE_PROVIDERS="CPUExecutionProvider",
               HISTOSERVE_INTRA_OP_THREADS="1", HISTOSERVE_LOG_LEVEL="INFO", **extra)
    log_path = tmp / f"{name}.log"
    log = open(log_path, "w")  # noqa: SIM115 (closed in stop_replica)
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO_ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    replica = {"name": name, "port": port, "url": f"http://127.0.0.1:{port}", "proc": proc, "log": log,
               "log_path": log_path}
    if wait:
        wait_ready(replica)
    return replica


def wait_ready(replica: dict) -> None:
    wait_for(f"replica {replica['name']} /readyz", lambda: status_of(replica["url"] + "/readyz") == 200,
             replica["proc"], timeout=WAIT_S)


def stop_replica(replica: dict) -> str:
    code = stop(replica["proc"], grace=30)
    replica["log"].close()
    output = replica["log_path"].read_text()
    assert code in (0, -signal.SIGTERM), f"replica {replica['name']} exited {code}:\n{output[-3000:]}"
    return output


@pytest.fixture(scope="module")
def pair(redis, store, tmp_path_factory):
    """Replicas A and B sharing `redis`. B drains for a second on SIGTERM (the nginx test stops it last)."""
    tmp = tmp_path_factory.mktemp("pair")
    a = start_replica(tmp, store, "a", wait=False, HISTOSERVE_STATE_URL=redis.url)
    try:
        b = start_replica(tmp, store, "b", wait=False, HISTOSERVE_STATE_URL=redis.url,
                          HISTOSERVE_SHUTDOWN_DELAY_S="1", HISTOSERVE_SHUTDOWN_TIMEOUT_S="10")
        try:
            wait_ready(a)
            wait_ready(b)
            yield a, b
        finally:
            stop_replica(b)
    finally:
        stop_replica(a)


def adapt(url: str, **data: str) -> httpx.Response:
    return httpx.post(url + "/adapt", files=SUPPORT, data={"labels": ["tumour", "tumour", "stroma", "stroma"],
                                                          "model": EMBEDDER, **data}, timeout=60)


def classify(url: str, adapter: str | None = None) -> httpx.Response:
    return httpx.post(url + "/classify", files=QUERY, data={"adapter": adapter} if adapter else {}, timeout=60)


def test_adapter_made_on_a_is_used_on_b(pair):
    a, b = pair
    made = adapt(a["url"], name="made-on-a")
    assert made.status_code == 201, made.text
    adapter = made.json()["id"]
    # The very next request, on the other replica.
    used = classify(b["url"], adapter)
    assert used.status_code == 200, used.text
    assert used.json()["adapter"]["id"] == adapter
    assert {r["label"] for r in used.json()["results"]} <= {"tumour", "stroma"}
    assert httpx.get(f"{b['url']}/adapters/{adapter}").json()["name"] == "made-on-a"
    assert adapter in {x["id"] for x in httpx.get(b["url"] + "/adapters").json()["adapters"]}
    # Both replicas compute the same answer from the same prototypes.
    assert classify(a["url"], adapter).json()["results"] == used.json()["results"]


def test_delete_on_a_is_refused_on_b(pair):
    a, b = pair
    adapter = adapt(a["url"]).json()["id"]
    assert classify(b["url"], adapter).status_code == 200  # B holds it in its cache now
    deleted = httpx.delete(f"{a['url']}/adapters/{adapter}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    refused = classify(b["url"], adapter)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "adapter_not_found"
    assert httpx.get(f"{b['url']}/adapters/{adapter}").status_code == 404
    assert httpx.delete(f"{b['url']}/adapters/{adapter}").status_code == 404


def test_redis_crash_loses_nothing_acknowledged_and_replicas_recover(pair, redis):
    a, b = pair
    kept = [adapt(a["url"], name=f"kept-{i}").json()["id"] for i in range(2)]
    gone = adapt(b["url"], name="gone").json()["id"]
    assert httpx.delete(f"{a['url']}/adapters/{gone}").status_code == 200
    redis.kill()  # right after the answers: whatever was acknowledged must be in the AOF already
    try:
        for replica in pair:
            down = adapt(replica["url"])
            assert down.status_code == 503 and down.json()["error"]["code"] == "state_unavailable", down.text
            assert int(down.headers["retry-after"]) >= 1
            lookup = classify(replica["url"], kept[0])
            assert lookup.status_code == 503 and lookup.json()["error"]["code"] == "state_unavailable"
            assert httpx.get(replica["url"] + "/adapters").status_code == 503
            # Without an adapter nothing changes, and the replica stays ready, saying what is wrong.
            assert classify(replica["url"]).status_code == 200
            ready = httpx.get(replica["url"] + "/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["state"]["backend"] == "redis" and ready.json()["state"]["ok"] is False
    finally:
        redis.start()
    # Back by themselves, with every acknowledged write and no deleted adapter.
    for replica in pair:
        wait_until(f"{replica['name']} sees Redis again",
                   lambda r=replica: httpx.get(r["url"] + "/readyz").json()["state"]["ok"])
        listed = wait_until(f"{replica['name']} lists adapters",
                            lambda r=replica: (x := httpx.get(r["url"] + "/adapters")).status_code == 200 and x.json())
        ids = {x["id"] for x in listed["adapters"]}
        assert set(kept) <= ids and gone not in ids
        assert classify(replica["url"], kept[1]).status_code == 200
    assert adapt(b["url"]).status_code == 201


# --- nginx in front of the pair


def nginx_config(tmp: Path, port: int, upstreams: list[str]) -> Path:
    """deploy/nginx/nginx.conf with loopback addresses and private paths; nothing else changes."""
    text = (DEPLOY / "nginx" / "nginx.conf").read_text()
    line = re.search(r"^(\s*)server histoserve:8000 (.*);$", text, re.M)
    servers = "\n".join(f"{line.group(1)}server {u} {line.group(2)};" for u in upstreams)
    text = text.replace(line.group(0), servers)
    text = re.sub(r"^(\s*)listen 8080;", rf"\1listen 127.0.0.1:{port};", text, flags=re.M)
    text = text.replace("/tmp/", f"{tmp}/")
    path = tmp / "nginx.conf"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def nginx(pair):
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
    if binary is None:
        pytest.skip("nginx not found: install Debian's nginx package (.ci/run does)")
    # nginx's workers drop root privileges: its directory must be reachable for them (pytest's tmp is not).
    tmp = Path(tempfile.mkdtemp(prefix="histoserve-nginx-"))
    tmp.chmod(0o755)
    port = free_port()
    # A third upstream nobody listens on: a replica still loading its bundles (it binds only once ready).
    dead = f"127.0.0.1:{free_port()}"
    upstreams = [f"127.0.0.1:{r['port']}" for r in pair] + [dead]
    config = nginx_config(tmp, port, upstreams)
    check = subprocess.run([binary, "-t", "-p", str(tmp), "-c", str(config)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stderr
    log = open(tmp / "nginx.out", "w")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen([binary, "-p", str(tmp), "-c", str(config), "-g", "daemon off;"], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for("nginx", lambda: status_of(url + "/nginx-health") == 200, proc)
        yield {"url": url, "dead": dead, "log_path": tmp / "nginx.out"}
    finally:
        code = stop(proc)
        log.close()
        output = (tmp / "nginx.out").read_text()
        shutil.rmtree(tmp, ignore_errors=True)
        assert code == 0, f"nginx did not stop cleanly ({code}):\n{output[-3000:]}"


def answered_by(response: httpx.Response) -> str:
    return last_upstream(response.headers["x-histoserve-upstream"])


def last_upstream(tried: str) -> str:
    # $upstream_addr lists every server tried, the one that answered last.
    return tried.split(",")[-1].strip()


def test_nginx_balances_over_ready_replicas_only(pair, nginx):
    replicas = {f"127.0.0.1:{r['port']}" for r in pair}
    with httpx.Client(base_url=nginx["url"], timeout=60) as c:
        seen = set()
        for _ in range(8):
            r = c.get("/models")
            assert r.status_code == 200, r.text
            seen.add(answered_by(r))
        assert seen == replicas  # both replicas, never the one that is not listening
        made = c.post("/adapt", files=SUPPORT, data={"labels": ["x", "x", "y", "y"], "model": EMBEDDER})
        assert made.status_code == 201, made.text
        used = {answered_by(r) for r in [c.post("/classify", files=QUERY, data={"adapter": made.json()["id"]})
                                          for _ in range(4)] if r.status_code == 200}
        assert used == replicas
        # Errors pass through as the service wrote them.
        missing = c.get("/adapters/no-such-adapter-000000")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "adapter_not_found"


def test_rolling_stop_behind_nginx_loses_no_request(pair, nginx):
    """Last in the module: it stops replica B. Traffic through nginx goes on answering 200 throughout."""
    a, b = pair
    answers = []  # (request, status, the upstreams nginx tried)

    def send(c: httpx.Client, method: str, path: str, **kwargs) -> None:
        r = c.request(method, path, **kwargs)
        answers.append((f"{method} {path}", r.status_code, r.headers.get("x-histoserve-upstream", "")))

    with httpx.Client(base_url=nginx["url"], timeout=60) as c:
        b["proc"].send_signal(signal.SIGTERM)
        # B is unready at once (it keeps serving for its 1 s delay), then stops accepting, then exits.
        wait_until("B draining", lambda: httpx.get(b["url"] + "/readyz").json().get("draining"), timeout=10,
                   interval=0.02)
        deadline = time.monotonic() + WAIT_S
        while b["proc"].poll() is None and time.monotonic() < deadline:
            send(c, "GET", "/models")
            send(c, "POST", "/classify", files=QUERY)
        assert b["proc"].poll() is not None, "B did not exit"
        for _ in range(4):
            send(c, "POST", "/classify", files=QUERY)
    failed = [answer for answer in answers if answer[1] != 200]
    assert answers and not failed, f"{failed}\nnginx:\n{nginx['log_path'].read_text()[-3000:]}"
    assert f"127.0.0.1:{a['port']}" in {last_upstream(tried) for *_, tried in answers}
    assert "Application shutdown complete" in b["log_path"].read_text()


# --- graceful SIGTERM of one replica


def partial_classify(port: int) -> tuple[socket.socket, bytes]:
    """Open a POST /classify and send all of it but its last bytes: a request in flight."""
    request = httpx.Request("POST", f"http://127.0.0.1:{port}/classify", files=QUERY)
    body = request.read()
    head = f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in request.headers.items() if k.lower() != "host") + "\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head.encode() + body[:-16])
    return sock, body[-16:]


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(head.split()[1]), rest


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_turns_unready_then_finishes_in_flight_within_a_bound(store, tmp_path):
    replica = start_replica(tmp_path, store, "c", HISTOSERVE_SHUTDOWN_DELAY_S="1", HISTOSERVE_SHUTDOWN_TIMEOUT_S="2")
    port, proc = replica["port"], replica["proc"]
    finished, stuck = partial_classify(port), partial_classify(port)
    try:
        proc.send_signal(signal.SIGTERM)
        # 1. Unready at once, while still answering.
        draining = wait_until("unready", lambda: (r := httpx.get(replica["url"] + "/readyz")).status_code == 503
                              and r.json(), timeout=10, interval=0.02)
        assert draining["draining"] is True and draining["ready"] is False
        # 2. After the delay: no new connections, but the requests in flight are still being served.
        wait_until("listener closed", lambda: refuses_connections(port), timeout=10, interval=0.02)
        assert proc.poll() is None
        sock, rest = finished
        sock.sendall(rest)
        status, body = read_response(sock)
        assert status == 200, body[:500]
        assert b'"results"' in body
        # 3. A request that never completes does not hold the replica past its timeout.
        proc.wait(timeout=30)
    finally:
        for sock, _ in (finished, stuck):
            sock.close()
        output = stop_replica(replica)
    assert "Application shutdown complete" in output
    assert re.search(r"Cancel 1 running task", output), output[-2000:]

"""Servers under test, each a uvicorn subprocess on a free loopback port, and their memory.

The service runs exactly as a user starts it (`python -m service`, settings from HISTOSERVE_*
variables); the naive endpoint runs as `python -m bench.naive`. Output goes to a log file
whose tail is shown when a server fails to start, and whose error lines the report counts.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process from /proc (None where /proc is not there)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and all its threads so far, from /proc (None without it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def rss(self) -> int | None:
        return rss_bytes(self.proc.pid)

    def cpu(self) -> float | None:
        return cpu_seconds(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def problem_lines(self) -> list[str]:
        """Log lines that say something went wrong (tracebacks, errors, 5xx)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        marks = ("Traceback", "ERROR", "Exception", "CRITICAL", " 500 ")
        return [line for line in text.splitlines() if any(m in line for m in marks)]

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it will not go; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def start(name: str, args: list[str], env: dict[str, str], log_path: Path, port: int,
          ready_path: str = "/readyz", timeout: float = 300.0) -> Server:
    """Start `python ARGS` with `env` added to ours; return once `ready_path` answers 200."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115  (the child owns it for its lifetime)
    proc = subprocess.Popen([sys.executable, *args], env={**os.environ, **env}, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    server = Server(name, proc, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{name} exited with {proc.returncode} before it was ready:\n{server.log_tail()}")
        try:
            if httpx.get(server.url(ready_path), timeout=2.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"{name} was not ready within {timeout:.0f}s:\n{server.log_tail()}")

"""Container health probe: exit 0 when the service answers 2xx on a path, 1 otherwise.

Slim images carry no curl, so Docker's HEALTHCHECK and compose's healthcheck run this with
the image's own Python (standard library only, nothing from the service is imported, so a
broken install still gets an honest "unhealthy"). Usage: `python healthcheck.py [/path]`,
default `/healthz`; host and port come from HISTOSERVE_PORT, and the probe always goes to
loopback because the service may bind 0.0.0.0.
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def probe(path: str = "/healthz", port: int | None = None, timeout: float = 3.0) -> int:
    port = port or int(os.environ.get("HISTOSERVE_PORT", "8000"))
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed loopback URL)
            status = response.status
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: {url} answered {exc.code}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url} unreachable: {exc}", file=sys.stderr)
        return 1
    return 0 if 200 <= status < 300 else 1


if __name__ == "__main__":
    sys.exit(probe(sys.argv[1] if len(sys.argv) > 1 else "/healthz"))

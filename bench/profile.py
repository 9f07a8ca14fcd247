"""Where the service's event loop spends its CPU: cProfile around the service under `bench.load`.

The service runs in this process (uvicorn on loopback, the store's default models) with cProfile on
its event-loop thread; `python -m bench.load` drives `/classify` with real EBHI-Seg PNGs from its own
process. Worker threads (decode, ONNX Runtime) are not profiled: what is left is the per-request
Python cost of HTTP, routing, form parsing, dependencies and JSON, the part a faster model cannot
remove. Writes bench/results/profile-<time>.json (per-request event-loop CPU, the load summary, the
top functions by own time; a coroutine suspended for the whole run, such as the lifespan, shows the
run's wall time as its own).

    python -m bench.profile [--concurrency 1] [--requests 400] [--top 25] [--no-profile]

The event loop's CPU per request is read from its thread's CPU clock over the measured requests;
cProfile adds to it, so `--no-profile` measures it alone (no function list).
"""
from __future__ import annotations

import os

# As `python -m service` runs (service/__main__.py): one BLAS thread. OpenBLAS reads it when numpy loads,
# so it is set before any import that loads numpy; an explicit OPENBLAS_NUM_THREADS still wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from service.settings import REPO_ROOT  # noqa: E402

from .images import load_samples  # noqa: E402
from .report import command_line, write_results  # noqa: E402
from .servers import free_port  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--top", type=int, default=25, help="functions listed, by own time")
    p.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    p.add_argument("--no-profile", action="store_true", help="only the event loop's CPU per request")
    p.add_argument("--model-store", type=Path, default=None, help="default: the service's (model_store/)")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    import uvicorn

    from service.main import create_app
    from service.settings import Settings

    samples = load_samples(args.data_dir, 8)
    store = {"model_store": args.model_store} if args.model_store else {}
    port = free_port()
    app = create_app(Settings(host="127.0.0.1", port=port, **store))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False, log_level="warning"))
    summary: dict = {}
    loop_clock = time.pthread_getcpuclockid(threading.main_thread().ident)  # the event loop's thread

    def drive() -> None:  # from a thread: the event loop runs in the main thread
        while not server.started:
            time.sleep(0.2)
        load = {"url": f"http://127.0.0.1:{port}/classify", "concurrency": args.concurrency,
                "bodies": [{"files": [["files", str(s.path)]], "data": {}} for s in samples],
                "requests": args.requests, "seconds": 120, "warmup": 0, "timeout": 30}
        with tempfile.TemporaryDirectory() as tmp:
            spec, warm = Path(tmp) / "spec.json", Path(tmp) / "warm.json"
            spec.write_text(json.dumps(load))
            warm.write_text(json.dumps({**load, "requests": 20}))  # first requests: sessions, caches
            subprocess.run([sys.executable, "-m", "bench.load", str(warm)], capture_output=True, check=False)
            before = time.clock_gettime(loop_clock)
            out = subprocess.run([sys.executable, "-m", "bench.load", str(spec)], capture_output=True, text=True)
            summary["event_loop_cpu_s"] = time.clock_gettime(loop_clock) - before
        summary.update(json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr[-2000:]})
        server.should_exit = True

    threading.Thread(target=drive, daemon=True).start()
    profile = None if args.no_profile else cProfile.Profile()  # hooks the thread that enables it: this one
    if profile is not None:
        profile.enable()
    server.run()
    top = []
    if profile is not None:
        profile.disable()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(args.top)
        top = text.getvalue().splitlines()
    ok = int(summary.get("ok", 0))
    result = {"command": command_line("bench.profile", argv), "concurrency": args.concurrency,
              "profiled": profile is not None, "requests_ok": ok,
              "load": {k: summary.get(k) for k in ("requests_per_s", "latency", "error")},
              "event_loop_cpu_s": round(summary.get("event_loop_cpu_s", 0.0), 3),
              "event_loop_cpu_ms_per_request": round(1000 * summary.get("event_loop_cpu_s", 0.0) / max(ok, 1), 3),
              "top_by_own_time": top}
    write_results(args.out_dir, f"profile-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json", result)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Service settings side by side: the same /classify load on the service under each setting, interleaved.

    python -m bench.sweep --config one_worker:CONCURRENT_BATCHES=1 \
        --config two_workers:CONCURRENT_BATCHES=2 --repeat 2 [--levels 1,16,32] [--seconds 8]

Each `--config NAME:KEY=VALUE,...` sets HISTOSERVE_KEY=VALUE for a fresh service subprocess (a
config with no settings, `NAME:`, runs the defaults). The configs run in turn, `--repeat` times
over, so that drift of a shared machine falls on each of them alike; every run starts the service
again and warms it up. Writes bench/results/sweep-<time>.json: per config and run, requests/s and
latency at each concurrency and the service's CPU per request, and the mean over runs.
"""
from __future__ import annotations

import argparse
import datetime as dt
import tempfile
from pathlib import Path

import numpy as np

from . import servers
from .images import REPO_ROOT, load_samples
from .report import command_line, write_results
from .run import _classify_bodies, load

RESULTS = REPO_ROOT / "bench" / "results"


def parse_config(text: str) -> tuple[str, dict[str, str]]:
    name, _, pairs = text.partition(":")
    if not name or not _:
        raise argparse.ArgumentTypeError(f"--config wants NAME:KEY=VALUE,...; got {text!r}")
    env = {}
    for pair in filter(None, pairs.split(",")):
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise argparse.ArgumentTypeError(f"--config {name}: {pair!r} is not KEY=VALUE")
        env[f"HISTOSERVE_{key.upper()}"] = value
    return name, env


def run_config(env: dict[str, str], bodies: list[dict], levels: list[int], seconds: float, workdir: Path,
               store: Path | None) -> dict:
    port = servers.free_port()
    base = {"HISTOSERVE_HOST": servers.HOST, "HISTOSERVE_PORT": str(port), "HISTOSERVE_LOG_LEVEL": "WARNING",
            "HISTOSERVE_STATE_DIR": str(workdir / f"state-{port}"),
            **({"HISTOSERVE_MODEL_STORE": str(store)} if store else {})}
    server = servers.start("service", ["-m", "service"], {**base, **env}, workdir / f"service-{port}.log", port)
    try:
        load(server.url("/classify"), bodies, concurrency=max(levels), requests=4 * max(levels), seconds=seconds,
             warmup=0, workdir=workdir)
        out = {}
        for level in levels:
            before = server.cpu()
            r = load(server.url("/classify"), bodies, concurrency=level, requests=100_000, seconds=seconds,
                     warmup=level, workdir=workdir)
            after = server.cpu()
            out[str(level)] = {"requests_per_s": r["requests_per_s"], "p50_ms": r["latency"]["p50_ms"],
                               "statuses": r["statuses"], "server_cpu_ms_per_request":
                               None if before is None or after is None or not r["sent"]
                               else 1000 * (after - before) / (r["sent"] + level)}
        return out
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=parse_config, action="append", required=True, metavar="NAME:KEY=VALUE,...")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--levels", default="1,16,32", help="client concurrencies, comma-separated")
    p.add_argument("--seconds", type=float, default=8.0, help="per level")
    p.add_argument("--model", default=None, help="NAME[/VERSION] to classify with; default: the service's")
    p.add_argument("--store", type=Path, default=None, help="model store; default: the service's")
    p.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    p.add_argument("--per-class", type=int, default=16)
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    levels = [int(c) for c in args.levels.split(",")]
    bodies = _classify_bodies(load_samples(args.data_dir, args.per_class), args.model)
    runs: dict[str, list[dict]] = {name: [] for name, _ in args.config}
    with tempfile.TemporaryDirectory(prefix="histoserve-sweep-") as tmp:
        for _ in range(args.repeat):
            for name, env in args.config:
                runs[name].append(run_config(env, bodies, levels, args.seconds, Path(tmp), args.store))
    mean = {name: {str(c): {key: float(np.mean([r[str(c)][key] for r in rs]))
                            for key in ("requests_per_s", "p50_ms", "server_cpu_ms_per_request")
                            if all(r[str(c)][key] is not None for r in rs)} for c in levels}
            for name, rs in runs.items()}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {"command": command_line("bench.sweep", argv), "timestamp": stamp, "levels": levels,
              "configs": {name: env for name, env in args.config}, "runs": runs, "mean": mean}
    write_results(args.out_dir, f"sweep-{stamp}.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

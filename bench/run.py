"""The order of a benchmark run: raw ORT first (nothing else running), then the service with the
micro-batcher on (classify levels, /gradcam, /adapt, the memory soak), then with it off, then
the plain FastAPI + ONNX Runtime endpoint (no batcher, same session options), then the naive
eager-PyTorch endpoint, then the HTTP floor (bench.floor: no decode, no model); results and the table last.

Every server is a subprocess on a free loopback port and every load run is a `bench.load`
subprocess, bounded in requests and seconds. Nothing here asserts a timing.
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from service.settings import Settings
from service.store import Bundle, discover

from . import raw, report, servers
from .floor import KINDS as FLOOR_KINDS
from .images import REPO_ROOT, Sample, load_samples, support_sets

WAYS, SHOTS = 5, 5
# --provider -> HISTOSERVE_PROVIDERS (None: the service's own choice, CUDA first when the build has it).
PROVIDERS = {"auto": None, "cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider,CPUExecutionProvider"}


@dataclass(frozen=True)
class Plan:
    mode: str
    levels: tuple[int, ...]  # client concurrency for /classify
    requests_per_level: int  # upper bound per level
    level_seconds: float  # upper bound per level (warm-up has the same bound again)
    warmup: int  # requests sent before each level, not counted
    raw_seconds: float  # per batch size, and for decode
    per_class: int  # images taken from each EBHI-Seg class
    gradcam_requests: int
    adapt_requests: int
    adapt_warmup: int  # /adapt requests before the measured ones, not counted
    soak_requests: int  # /classify requests between the two memory readings
    soak_seconds: float


QUICK = Plan("quick", (1, 2), 6, 20.0, 2, 0.2, SHOTS, 3, 2, 0, 30, 60.0)
# /adapt: 30 measured requests after 3 warm-up ones (round 12; until then 10 after 1): the first few after the
# classify levels are slow, and a p50 of 10 moved by 25 % between runs of the same code
FULL = Plan("full", (1, 16, 32), 3000, 8.0, 16, 2.0, 16, 60, 30, 3, 5000, 240.0)


def latest_bundles(store: Path, wanted: list[str] | None) -> tuple[list[Bundle], list[str]]:
    """The highest version of each bundle (or the ones named as name or name/version), and refusals."""
    bundles, refused = discover(store)
    notes = [f"refused by the store checks, not benchmarked: {p}: {why}" for p, why in refused]
    if wanted:
        chosen = []
        for ref in wanted:
            name, _, version = ref.partition("/")
            found = [b for b in bundles if b.name == name and (not version or b.version == int(version))]
            if not found:
                raise SystemExit(f"bench: no bundle {ref!r} in {store}; found {[b.ref for b in bundles]}")
            chosen.append(found[-1])
        return chosen, notes
    latest: dict[str, Bundle] = {}
    for b in bundles:  # sorted by (name, version): the last one wins
        latest[b.name] = b
    return list(latest.values()), notes


def load(url: str, bodies: list[dict], *, concurrency: int, requests: int, seconds: float, warmup: int,
         workdir: Path) -> dict:
    """Run `python -m bench.load` on a spec and return its summary."""
    spec = {"url": url, "bodies": bodies, "concurrency": concurrency, "requests": requests, "seconds": seconds,
            "warmup": warmup, "timeout": 120.0}
    fd, spec_path = tempfile.mkstemp(suffix=".json", dir=workdir)
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f)
    proc = subprocess.run([sys.executable, "-m", "bench.load", spec_path], capture_output=True, text=True,
                          timeout=2 * seconds + 300, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def _classify_bodies(samples: list[Sample], ref: str | None, field: str = "files") -> list[dict]:
    data = {"model": ref} if ref else {}
    return [{"files": [[field, str(s.path)]], "data": data} for s in samples]


def _adapt_bodies(samples: list[Sample], ref: str, count: int) -> list[dict]:
    return [{"files": [["files", str(s.path)] for s in support], "data": {"model": ref,
                                                                        "labels": [s.label for s in support]}}
            for support in support_sets(samples, WAYS, SHOTS, count)]


class Runner:
    def __init__(self, plan: Plan, store: Path, bundles: list[Bundle], samples: list[Sample], workdir: Path,
                 naive: bool, adapt_refs: list[str], providers: str | None = None):
        self.plan, self.store, self.bundles, self.samples, self.workdir = plan, store, bundles, samples, workdir
        self.naive, self.adapt_refs = naive, adapt_refs
        self.providers = providers  # HISTOSERVE_PROVIDERS for every server; None: the service's default
        self.problems: list[str] = []
        self.classifiers = [b for b in bundles if b.task == "classification"]

    def _load(self, server: servers.Server, path: str, bodies: list[dict], concurrency: int, requests: int,
              seconds: float | None = None, warmup: int | None = None, what: str = "") -> dict:
        cpu_before = server.cpu()
        result = load(server.url(path), bodies, concurrency=concurrency, requests=requests,
                      seconds=seconds or self.plan.level_seconds,
                      warmup=self.plan.warmup if warmup is None else warmup, workdir=self.workdir)
        # The server's CPU per request (warm-up requests included): the hot path's cost, which other
        # load on the machine moves far less than it moves throughput.
        cpu_after = server.cpu()
        if cpu_before is not None and cpu_after is not None and result["sent"]:
            result["server_cpu_s"] = cpu_after - cpu_before
            result["server_cpu_ms_per_request"] = 1000 * (cpu_after - cpu_before) / (
                result["sent"] + (self.plan.warmup if warmup is None else warmup))
        bad = {s: n for s, n in result["statuses"].items() if not s.startswith("2")}
        if bad:
            self.problems.append(f"{server.name} {path} {what} at concurrency {concurrency}: non-2xx answers {bad}; "
                                 f"first: {result['error_samples'][:2]}")
        if not server.alive():
            self.problems.append(f"{server.name} died during {path} {what} (exit {server.proc.returncode})")
        return result

    def _levels(self, server: servers.Server, path: str, bodies: list[dict], what: str) -> dict:
        return {str(c): self._load(server, path, bodies, c, self.plan.requests_per_level, what=what)
                for c in self.plan.levels}

    def _env(self, port: int, **extra: str) -> dict[str, str]:
        return {"HISTOSERVE_MODEL_STORE": str(self.store), "HISTOSERVE_HOST": servers.HOST,
                "HISTOSERVE_PORT": str(port), "HISTOSERVE_STATE_DIR": str(self.workdir / f"state-{port}"),
                "HISTOSERVE_LOG_LEVEL": "WARNING", **self._provider_env(),
                **extra}

    def _provider_env(self) -> dict[str, str]:
        if not self.providers:
            return {}
        cuda = self.providers.startswith("CUDA")  # --provider cuda: no silent fallback to CPU
        return {"HISTOSERVE_PROVIDERS": self.providers, **({"HISTOSERVE_REQUIRE_CUDA": "true"} if cuda else {})}

    def _start_service(self, name: str, **extra: str) -> servers.Server:
        port = servers.free_port()
        return servers.start(name, ["-m", "service"], self._env(port, **extra), self.workdir / f"{name}.log", port)

    def _finish(self, server: servers.Server) -> None:
        code = server.stop()
        lines = server.problem_lines()
        if lines:
            self.problems.append(f"{server.name} logged {len(lines)} error lines, first: {lines[:3]}")
        if code not in (0, None, -15):
            self.problems.append(f"{server.name} exited with {code} on SIGTERM; log tail: {server.log_tail(5)}")

    def service_batched(self, results: dict) -> dict:
        """Micro-batcher on (the service's own settings): levels, /gradcam, /adapt, memory."""
        server = self._start_service("service-batched")
        memory: dict = {}
        try:
            top = max(self.plan.levels)
            everyone = [body for b in self.classifiers for body in _classify_bodies(self.samples, b.ref)]
            # Warm-up: every path the later runs take, so the baseline RSS already holds their buffers.
            if everyone:
                self._load(server, "/classify", everyone, top, 4 * top, warmup=0, what="warm-up")
            for b in self.classifiers:
                if b.gradcam_file is not None:
                    self._load(server, "/gradcam", _classify_bodies(self.samples, b.ref, "file"), 1, 2, warmup=0,
                               what="warm-up")
            for ref in self.adapt_refs:
                self._load(server, "/adapt", _adapt_bodies(self.samples, ref, 1), 1, 1, warmup=0, what="warm-up")
            before, counted = server.rss(), 0
            # RSS along the way: growth that stops after the first requests is allocators settling,
            # growth that goes on through both halves of the soak is a leak.
            timeline = [{"after": "warm-up", "requests": 0, "rss_bytes": before}]
            for b in self.classifiers:
                entry = results[b.ref]
                levels = self._levels(server, "/classify", _classify_bodies(self.samples, b.ref), "batched")
                entry.setdefault("service", {})["batched"] = levels
                counted += sum(r["sent"] for r in levels.values())
                if b.gradcam_file is not None:
                    entry["gradcam"] = self._load(server, "/gradcam", _classify_bodies(self.samples, b.ref, "file"),
                                                  1, self.plan.gradcam_requests)
                    counted += entry["gradcam"]["sent"]
                timeline.append({"after": f"{b.ref} levels and /gradcam", "requests": counted, "rss_bytes": server.rss()})
            for ref in self.adapt_refs:
                bodies = _adapt_bodies(self.samples, ref, self.plan.adapt_warmup + self.plan.adapt_requests)
                run = self._load(server, "/adapt", bodies, 1, self.plan.adapt_requests,
                                 seconds=3 * self.plan.level_seconds, warmup=self.plan.adapt_warmup)
                results[ref]["adapt"] = {**run, "model": ref}
                counted += run["sent"]
                timeline.append({"after": f"{ref} /adapt", "requests": counted, "rss_bytes": server.rss()})
            soaks = []
            for half in (1, 2):
                left = (self.plan.soak_requests - counted) if half == 2 else (self.plan.soak_requests - counted) // 2
                if not everyone or left <= 0:
                    continue
                soak = self._load(server, "/classify", everyone, max(self.plan.levels), left,
                                  seconds=self.plan.soak_seconds / 2, warmup=0, what=f"memory soak, half {half}")
                counted += soak["sent"]
                soaks.append({k: soak[k] for k in ("sent", "ok", "requests_per_s", "wall_s", "stopped_by")})
                timeline.append({"after": f"soak half {half}", "requests": counted, "rss_bytes": server.rss()})
            after = server.rss()
            memory["soak"], memory["timeline"] = soaks, timeline
            if before is not None and after is not None:
                memory.update(before_bytes=before, after_bytes=after, requests=counted,
                              growth=(after - before) / before)
        finally:
            self._finish(server)
        return memory

    def service_unbatched(self, results: dict) -> None:
        """Micro-batcher off: the service's own knob, max_batch_size=1."""
        if not self.classifiers:
            return
        server = self._start_service("service-unbatched", HISTOSERVE_MAX_BATCH_SIZE="1")
        try:
            for b in self.classifiers:
                results[b.ref]["service"]["unbatched"] = self._levels(
                    server, "/classify", _classify_bodies(self.samples, b.ref), "unbatched")
        finally:
            self._finish(server)

    def plain_runs(self, results: dict) -> None:
        """The usual FastAPI + ONNX Runtime endpoint: one session.run per request, same settings."""
        for b in self.classifiers:
            port = servers.free_port()
            server = servers.start(f"plain-{b.name}", ["-m", "bench.plain", "--bundle", str(b.path), "--port",
                                                        str(port)], self._env(port), self.workdir / f"plain-{b.name}.log",
                                   port)
            try:
                results[b.ref]["plain"] = self._levels(server, "/classify", _classify_bodies(self.samples, None, "file"),
                                                       "plain")
            finally:
                self._finish(server)

    def floor_runs(self) -> dict:
        """The HTTP floor (bench.floor): the same uploads to endpoints that decode nothing and run no model."""
        floor = {}
        for kind in FLOOR_KINDS:
            port = servers.free_port()
            server = servers.start(f"floor-{kind}", ["-m", "bench.floor", "--kind", kind, "--port", str(port)], {},
                                   self.workdir / f"floor-{kind}.log", port)
            try:
                floor[kind] = self._levels(server, "/classify", _classify_bodies(self.samples, None, "file"),
                                           f"floor {kind}")
            finally:
                self._finish(server)
        return floor

    def naive_runs(self, results: dict) -> None:
        for b in self.classifiers:
            port = servers.free_port()
            server = servers.start(f"naive-{b.name}", ["-m", "bench.naive", "--bundle", str(b.path), "--port",
                                                        str(port)], {}, self.workdir / f"naive-{b.name}.log", port)
            try:
                results[b.ref]["naive"] = self._levels(server, "/classify", _classify_bodies(self.samples, None, "file"),
                                                       "naive")
                results[b.ref]["naive_weights"] = "random init"
            finally:
                self._finish(server)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def versions() -> str:
    import onnxruntime

    parts = [f"python {platform.python_version()}", f"onnxruntime {onnxruntime.__version__}"]
    if importlib.util.find_spec("torch") is not None:
        import torch

        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    return ", ".join(parts)


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "service", "bench"], cwd=REPO_ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + (" (service/ or bench/ modified)" if dirty else "")
    except OSError:
        return "unknown"


def run(plan: Plan, *, store: Path, data_dir: Path, results_dir: Path, models: list[str] | None,
        adapt_model: str | None, naive: bool, command: str, int8: bool = False,
        int8_store: Path | None = None, provider: str = "auto", plain: bool = True) -> tuple[dict, Path, Path]:
    """Run every measurement and write `<results_dir>/<timestamp>.json` and `.md`."""
    store = Path(store).resolve()
    bundles, notes = latest_bundles(store, models)
    if not bundles:
        raise SystemExit(f"bench: no bundle in {store}; export one (training.export.export_bundle) or pass --store")
    samples = load_samples(data_dir, plan.per_class)
    providers = PROVIDERS[provider]
    settings = Settings(model_store=store, **({"providers": providers} if providers else {}))
    if adapt_model:
        adapt_refs = [b.ref for b in latest_bundles(store, [adapt_model])[0]]
    else:
        adapt_refs = [b.ref for b in bundles if b.task == "embedding"]
        if not adapt_refs and any(b.has_embedding for b in bundles):
            fallback = next(b for b in bundles if b.has_embedding)
            adapt_refs = [fallback.ref]
            notes.append(f"no embedding bundle selected: /adapt measured on {fallback.ref}'s embedding output")
    if naive and importlib.util.find_spec("torch") is None:
        naive = False
        notes.append("torch is not installed: the naive eager-PyTorch endpoint was not measured")

    timestamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    load_before = os.getloadavg()
    results: dict = {
        "meta": {"timestamp": timestamp, "command": command, "machine": machine(), "versions": versions(),
                 "commit": commit(), "store": str(store), "provider": provider,
                 "images": f"{len(samples)} EBHI-Seg PNGs from {data_dir} ({plan.per_class} per class)",
                 "service_settings": {k: getattr(settings, k) for k in (
                     "max_batch_size", "max_wait_ms", "max_queue", "concurrent_batches", "intra_op_threads",
                     "inter_op_threads", "allow_spinning", "graph_optimization_level", "pad_batches",
                     "cuda_conv_algo_search", "cuda_tf32")}},
        "plan": asdict(plan),
        "bundles": {},
    }
    all_bundles = {b.ref: b for b in bundles}
    for ref in adapt_refs:  # an --adapt-model outside --model still gets its raw embed figure
        all_bundles.setdefault(ref, latest_bundles(store, [ref])[0][0])
    for b in all_bundles.values():
        print(f"bench: raw ONNX Runtime on {b.ref}", file=sys.stderr)
        results["bundles"][b.ref] = {"task": b.task, "architecture": b.manifest.get("architecture"),
                                     "input_size": list(b.input_size), "path": str(b.path),
                                     "raw": raw.measure(b, samples, settings, seconds=plan.raw_seconds)}

    with tempfile.TemporaryDirectory(prefix="histoserve-bench-") as tmp:
        runner = Runner(plan, store, bundles, samples, Path(tmp), naive, adapt_refs, providers)
        print("bench: service with the micro-batcher on", file=sys.stderr)
        results["memory"] = runner.service_batched(results["bundles"])
        print("bench: service with the micro-batcher off", file=sys.stderr)
        runner.service_unbatched(results["bundles"])
        if plain:
            print("bench: plain FastAPI + ONNX Runtime endpoint", file=sys.stderr)
            runner.plain_runs(results["bundles"])
        if naive:
            print("bench: naive eager-PyTorch endpoint", file=sys.stderr)
            runner.naive_runs(results["bundles"])
        print("bench: HTTP floor (no decode, no model)", file=sys.stderr)
        results["floor"] = runner.floor_runs()
        results["problems"] = runner.problems
        if int8:
            from . import quantize  # needs the onnx package (the train extra)

            print("bench: int8 variants", file=sys.stderr)
            results["int8"] = quantize.compare_all(bundles, samples, data_dir, settings, plan,
                                                   Path(int8_store or Path(tmp) / "int8_store"))
            if int8_store is None:
                notes.append("int8 bundles were built in a temporary store and removed; keep them with --int8-store")
    # Other work on the machine moves every figure; the load average says how much there was.
    results["meta"]["load_average"] = {"start": [round(v, 2) for v in load_before],
                                       "end": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count()}
    results["notes"] = notes
    results["targets"] = report.evaluate(results)

    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_dir / f"{timestamp}.json", results_dir / f"{timestamp}.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(report.markdown(results), encoding="utf-8")
    return results, json_path, md_path

"""Ratios, targets and the markdown table, from the results dict that `run` writes as JSON.

Targets are ratios measured in one run on one machine (issue 9); the table marks each one
met or missed and never hides a missing figure: a ratio that could not be computed says n/a.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Target:
    key: str
    what: str
    op: str  # ">=" or "<="
    bound: float

    def status(self, value: float | None) -> str:
        if value is None or not math.isfinite(value):
            return "n/a"
        return "met" if (value >= self.bound if self.op == ">=" else value <= self.bound) else "missed"

    @property
    def goal(self) -> str:
        return f"{self.op} {self.bound:g}"


TARGETS = (
    Target("service_vs_raw", "service throughput at the top concurrency / raw ORT best batch incl. decode", ">=", 0.95),
    Target("c1_latency", "service p50 at concurrency 1 / (raw ORT batch-1 p50 + decode p50)", "<=", 1.15),
    Target("vs_naive", "service throughput / naive eager-PyTorch throughput, top concurrency", ">=", 1.4),
    Target("vs_plain", "service throughput / plain FastAPI + ORT endpoint throughput, concurrency 16", ">=", 1.1),
    Target("gradcam_vs_classify", "/gradcam p50 / /classify p50, concurrency 1", "<=", 1.5),
    Target("adapt_vs_raw_embed", "/adapt 5-way 5-shot p50 / raw decode + embed of 25 images", "<=", 1.3),
    Target("rss_growth", "service resident memory growth over the soak", "<=", 0.05),
)
BY_KEY = {t.key: t for t in TARGETS}
FLOOR_LABELS = {"fastapi": "FastAPI upload", "asgi": "bare ASGI"}


def _get(d: dict | None, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _ratio(a, b) -> float | None:
    if a is None or b is None or not b or not math.isfinite(a) or not math.isfinite(b):
        return None
    return a / b


def bundle_ratios(entry: dict, top: int) -> dict[str, float | None]:
    """The per-bundle ratios (`top` is the highest concurrency measured)."""
    raw, batched = entry.get("raw", {}), _get(entry, "service", "batched") or {}
    top_key = str(top)
    plain_key = "16" if "16" in batched else top_key
    return {
        "service_vs_raw": _ratio(_get(batched, top_key, "requests_per_s"), raw.get("best_images_per_s_with_decode")),
        "c1_latency": _ratio(_get(batched, "1", "latency", "p50_ms"), raw.get("batch1_p50_plus_decode_p50_ms")),
        "vs_naive": _ratio(_get(batched, top_key, "requests_per_s"), _get(entry, "naive", top_key, "requests_per_s")),
        # At concurrency 16 where it was measured, else at the top level.
        "vs_plain": _ratio(_get(batched, plain_key, "requests_per_s"), _get(entry, "plain", plain_key, "requests_per_s")),
        "gradcam_vs_classify": _ratio(_get(entry, "gradcam", "latency", "p50_ms"),
                                      _get(batched, "1", "latency", "p50_ms")),
        "adapt_vs_raw_embed": _ratio(_get(entry, "adapt", "latency", "p50_ms"),
                                     _get(raw, "embed_support_set", "latency", "p50_ms")),
    }


def ceilings(floor: dict, entry: dict, top: int) -> dict[str, dict[str, float | None]]:
    """The best value of a target that the measured costs leave any endpoint, by what bounds it.

    service_vs_raw, c1_latency: an endpoint that spends, besides the raw ONNX Runtime work, what an HTTP floor
    of bench.floor spends (F floor requests/s, R raw images/s with decode) reaches at most F / (F + R), and at
    concurrency 1 at least (raw batch-1 + decode + floor p50) / (raw batch-1 + decode).
    vs_plain: batching gains over batch-1 runs at most what ONNX Runtime gains from batches, best-batch / batch-1
    images/s (the service's settings), when both endpoints spend the same per request otherwise."""
    raw = entry.get("raw", {})
    best, batch1 = raw.get("best_images_per_s_with_decode"), raw.get("batch1_p50_plus_decode_p50_ms")
    found: dict[str, dict[str, float | None]] = {"service_vs_raw": {}, "c1_latency": {}, "vs_plain": {}}
    for kind, levels in floor.items():
        label = FLOOR_LABELS.get(kind, kind)
        rate, p50 = _get(levels, str(top), "requests_per_s"), _get(levels, "1", "latency", "p50_ms")
        found["service_vs_raw"][label] = _ratio(rate, rate + best) if rate and best else None
        found["c1_latency"][label] = _ratio(batch1 + p50, batch1) if batch1 and p50 is not None else None
    batches = raw.get("batches") or {}
    if "1" in batches:
        found["vs_plain"]["ORT batching"] = _ratio(max(b["images_per_s"] for b in batches.values()),
                                                   batches["1"]["images_per_s"])
    return {key: values for key, values in found.items() if values}


def evaluate(results: dict) -> list[dict]:
    """One row per (bundle, target) that applies to the bundle, plus the service-wide memory row."""
    top = max(results["plan"]["levels"])
    rows = []
    for ref, entry in results["bundles"].items():
        bounds = ceilings(results.get("floor") or {}, entry, top)
        for key, value in bundle_ratios(entry, top).items():
            applies = (entry["task"] == "classification") if key != "adapt_vs_raw_embed" else "adapt" in entry
            if applies:
                target = BY_KEY[key]
                rows.append({"bundle": ref, "target": key, "what": target.what, "value": value,
                             "goal": target.goal, "status": target.status(value),
                             **({"ceiling": bounds[key]} if key in bounds else {})})
    growth = _get(results, "memory", "growth")
    # Without a soak (a store with no classifier) a handful of requests says nothing about leaks.
    if _get(results, "memory", "before_bytes") is not None and _get(results, "memory", "soak"):
        target = BY_KEY["rss_growth"]
        rows.append({"bundle": "service", "target": "rss_growth", "what": target.what, "value": growth,
                     "goal": target.goal, "status": target.status(growth)})
    return rows


def _f(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _load_row(server: str, run: dict) -> str:
    lat = run["latency"]
    bad = run["sent"] - run["ok"]
    return (f"| {server} | {run['concurrency']} | {_f(run['requests_per_s'])} | {_f(lat['p50_ms'])} | "
            f"{_f(lat['p95_ms'])} | {_f(lat['p99_ms'])} | {run['ok']}/{run['sent']}"
            f"{' (' + str(bad) + ' failed)' if bad else ''} |")


def markdown(results: dict) -> str:
    meta, plan = results["meta"], results["plan"]
    top = max(plan["levels"])
    out = [f"# histoserve benchmark {meta['timestamp']} ({plan['mode']} mode)", "",
           f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}  ",
           f"Versions: {meta['versions']}  ", f"Commit: {meta['commit']}  ",
           f"Service settings: {meta['service_settings']}  ",
           f"Images: {meta['images']}  "]
    if meta.get("load_average"):
        load = meta["load_average"]
        out.append(f"Load average (1, 5, 15 min) on {load['cpus']} CPUs: {load['start']} at the start, "
                   f"{load['end']} at the end; other work on the machine moves every figure.")
    out.append("")
    for ref, entry in results["bundles"].items():
        raw = entry["raw"]
        streams = raw.get("concurrent_batches", 1)
        out += [f"## {ref} ({entry['architecture']}, {entry['task']}, {entry['input_size'][0]}x{entry['input_size'][1]})",
                "", f"Raw ONNX Runtime on {raw['provider']} (same session options as the service"
                + (f", {streams} callers at once as its {streams} batch workers" if streams > 1 else "") + "); "
                f"decode + resize + normalise per image: p50 {_f(raw['decode']['p50_ms'], 2)} ms, "
                f"mean {_f(raw['decode']['mean_ms'], 2)} ms.", ""]
        tables = [("service settings", raw["batches"])]
        if raw.get("ort_defaults_batches"):
            tables.append(("ORT defaults (its own thread count, one caller)", raw["ort_defaults_batches"]))
        for name, batches in tables:
            out += [f"| batch ({name}) | images/s | p50 ms per call | p95 ms per call |", "|---:|---:|---:|---:|"]
            out += [f"| {b['batch']} | {_f(b['images_per_s'])} | {_f(b['latency']['p50_ms'], 2)} | "
                    f"{_f(b['latency']['p95_ms'], 2)} |" for b in batches.values()]
            out.append("")
        out += [f"Best batch {raw['best_batch']} ({raw.get('best_from', 'service settings')}): "
                f"{_f(raw['best_images_per_s'])} images/s, {_f(raw['best_images_per_s_with_decode'])} images/s "
                f"with decode; fastest batch 1 p50 + decode p50 = {_f(raw['batch1_p50_plus_decode_p50_ms'], 2)} ms. "
                "The service is held to these, the better of both tables."]
        if "gradcam_head" in raw:
            out.append(f"Raw Grad-CAM head (gradcam.onnx on batch-1 features): p50 {_f(raw['gradcam_head']['p50_ms'], 2)} ms.")
        if "embed_support_set" in raw:
            out.append(f"Raw decode + embed of 25 images (chunks of {raw['embed_support_set']['chunk']}): "
                       f"p50 {_f(raw['embed_support_set']['latency']['p50_ms'])} ms.")
        out.append("")
        runs = []
        for label, key in (("service, micro-batcher on", "batched"), ("service, micro-batcher off", "unbatched")):
            runs += [_load_row(label, r) for r in (_get(entry, "service", key) or {}).values()]
        if entry.get("plain"):
            runs += [_load_row("plain FastAPI + ONNX Runtime, no batcher", r) for r in entry["plain"].values()]
        if entry.get("naive"):
            weights = entry.get("naive_weights", "random init")
            runs += [_load_row(f"naive eager PyTorch ({weights})", r) for r in entry["naive"].values()]
        if "gradcam" in entry:
            runs.append(_load_row("service /gradcam", entry["gradcam"]))
        if "adapt" in entry:
            runs.append(_load_row(f"service /adapt 5-way 5-shot on {entry['adapt']['model']}", entry["adapt"]))
        if runs:
            out += ["| server (POST /classify unless named) | concurrency | req/s | p50 ms | p95 ms | p99 ms | ok/sent |",
                    "|---|---:|---:|---:|---:|---:|---:|", *runs, ""]
            cpu = [(r["client_cpu_s"], r["sent"]) for key in ("batched", "unbatched")
                   for r in (_get(entry, "service", key) or {}).values()]
            if sum(n for _, n in cpu):
                out += [f"Load generator CPU (its own process, same machine): "
                        f"{1000 * sum(c for c, _ in cpu) / sum(n for _, n in cpu):.2f} ms per /classify request.", ""]
    mem = results.get("memory") or {}
    if mem.get("before_bytes") is not None:
        out += ["## Memory", "",
                f"Service RSS {mem['before_bytes'] / 2**20:.1f} MiB after warm-up, "
                f"{mem['after_bytes'] / 2**20:.1f} MiB after {mem['requests']} more requests "
                f"({mem['growth'] * 100:+.2f}%).", ""]
        if mem.get("timeline"):
            out += ["| RSS after | requests since warm-up | MiB |", "|---|---:|---:|"]
            out += [f"| {t['after']} | {t['requests']} | {_f((t['rss_bytes'] or 0) / 2**20)} |" for t in mem["timeline"]]
            out.append("")
    for ref, q in (results.get("int8") or {}).items():
        if "refused" in q:  # outside its stated parity tolerance: never published (bench/quantize.py)
            out += [f"## int8 variant of {ref}", "", f"Not published: {q['refused']}", ""]
            continue
        rf, ri = q["raw"]["fp32"], q["raw"]["int8"]
        out += [f"## int8 variant of {ref}", "", f"Static quantization, {q['calibration_images']} calibration images; "
                f"evaluated on {q['eval_images']} images ({q['source']}).", "",
                "| | fp32 | int8 |", "|---|---:|---:|",
                f"| accuracy | {_f(q['accuracy']['fp32'], 3)} | {_f(q['accuracy']['int8'], 3)} |",
                f"| balanced accuracy | {_f(q['balanced_accuracy']['fp32'], 3)} | {_f(q['balanced_accuracy']['int8'], 3)} |",
                f"| raw images/s, best batch | {_f(rf['best_images_per_s'])} | {_f(ri['best_images_per_s'])} |",
                f"| raw batch-1 p50 ms | {_f(rf['batches']['1']['latency']['p50_ms'], 2)} | "
                f"{_f(ri['batches']['1']['latency']['p50_ms'], 2)} |", "",
                f"Top-1 agreement {_f(q['top1_agreement'], 3)}, max |probability difference| "
                f"{_f(q['max_abs_probability_diff'], 4)}."]
        if "gradcam" in q:
            g = q["gradcam"]
            out.append(f"Grad-CAM on int8 features vs fp32 ({g['images']} images): mean |diff| "
                       f"{_f(g['mean_abs_diff'], 4)}, max |diff| {_f(g['max_abs_diff'], 3)}, "
                       f"mean Pearson r {_f(g['mean_pearson'], 3)}.")
        out += [f"Servable (balanced accuracy within 1 point and faster): {'yes' if q['servable'] else 'no'}.", ""]
    floor = results.get("floor") or {}
    if floor:
        out += ["## HTTP floor (bench.floor: the same uploads, no decode, no model)", "",
                "| endpoint | concurrency | req/s | p50 ms | p95 ms | p99 ms | ok/sent |", "|---|---:|---:|---:|---:|---:|---:|"]
        for kind, levels in floor.items():
            out += [_load_row(FLOOR_LABELS.get(kind, kind), r) for r in levels.values()]
        out.append("")
    out += ["## Targets", "", f"Top concurrency in this run: {top}. Ratios from this one run on this machine. "
            "Best reachable: what the costs measured here leave any endpoint (bench.report.ceilings): the HTTP "
            "floor's cost per request besides the raw work, or ORT's own gain from batching.", "",
            "| bundle | target | measured | goal | status | best reachable |", "|---|---|---:|---:|---|---|"]
    for row in results["targets"]:
        ceiling = "; ".join(f"{label} {_f(v, 3)}" for label, v in (row.get("ceiling") or {}).items())
        out.append(f"| {row['bundle']} | {row['what']} | {_f(row['value'], 3)} | {row['goal']} | {row['status']} | "
                   f"{ceiling} |")
    out.append("")
    problems = results.get("problems") or []
    out += ["## Problems seen", ""] + ([f"- {p}" for p in problems] if problems else ["None: every request got a 2xx answer "
                                                                                      "and no server logged an error."])
    for note in results.get("notes") or []:
        out.append(f"- note: {note}")
    return "\n".join(out) + "\n"


def command_line(module: str, argv: list[str] | None) -> str:
    """How a bench script was run, for its results file."""
    return f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv)


def write_results(results_dir: Path, filename: str, result: dict, indent: int = 1) -> Path:
    """Write a bench script's results file (and print it): the only record a README figure may cite."""
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / filename
    out.write_text(json.dumps(result, indent=indent) + "\n")
    print(json.dumps(result, indent=indent))
    return out

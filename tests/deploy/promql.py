"""The metric catalogue the dashboard and alerts may use, and a small PromQL name scanner.

The catalogue is the service's metric interface (issue 8; service/metrics.py), by the
name a series carries on the wire: counters end in `_total`, histograms expose
`_bucket`, `_sum` and `_count`, an Info exposes `_info`. tests/deploy/test_metrics.py
checks that service/metrics.py exposes exactly these.
"""
from __future__ import annotations

import re

CATALOGUE: dict[str, str] = {
    "histoserve_http_requests_total": "counter",
    "histoserve_http_request_duration_seconds": "histogram",
    "histoserve_inference_duration_seconds": "histogram",
    "histoserve_batch_size": "histogram",
    "histoserve_queue_depth": "gauge",
    "histoserve_queue_capacity": "gauge",
    "histoserve_images_classified_total": "counter",
    "histoserve_errors_total": "counter",
    "histoserve_adapters": "gauge",
    "histoserve_build_info": "info",
    "histoserve_model_info": "gauge",
}


def series_names(catalogue: dict[str, str] = CATALOGUE) -> set[str]:
    """Every series name a query may select: a histogram only through its three series."""
    names: set[str] = set()
    for name, kind in catalogue.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
# Label lists after these keywords are labels, not metrics.
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# An identifier not preceded by a word character, dot or $ (numbers, Grafana variables) and not
# followed by "(" (a function call) is a metric name.
_IDENT = re.compile(r"(?<![\w.$:])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "and", "or", "unless", "offset", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (label names, functions and keywords left out)."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub(" ", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}

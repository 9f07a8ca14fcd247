"""The metric catalogue the dashboard and alerts are built on is exactly what the service exports."""
from __future__ import annotations

from tests.deploy.promql import CATALOGUE, metric_names


def exported(metrics) -> dict[str, str]:
    """Wire name -> kind for every family in the service's registry (`_created` series aside)."""
    out = {}
    for family in metrics.registry.collect():
        if family.type == "counter":
            out[f"{family.name}_total"] = "counter"
        elif family.type == "info":
            out[f"{family.name}_info"] = "info"
        else:
            out[family.name] = family.type
    return out


def test_catalogue_is_what_the_service_exports():
    from service.metrics import Metrics

    assert exported(Metrics()) == CATALOGUE


def test_scanner_finds_metrics_and_skips_labels_functions_and_variables():
    expr = ('histogram_quantile(0.95, sum by (le, model) (rate(histoserve_batch_size_bucket{route!="/x{y}"}'
            '[$__rate_interval]))) > 1e3 or on(model) group_left(provider) histoserve_model_info unless absent(up)')
    assert metric_names(expr) == {"histoserve_batch_size_bucket", "histoserve_model_info", "up"}
    assert metric_names("sum(rate(foo_total[5m])) by (le) / bar offset 5m") == {"foo_total", "bar"}

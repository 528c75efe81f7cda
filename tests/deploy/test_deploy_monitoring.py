"""metrics.enabled: the metrics port on the container, the Service and the config, a ServiceMonitor
that scrapes it, and a PrometheusRule whose alerts parse as PromQL and select only metrics (and label
values) the sidecar exports. The scrape itself is tested on the running pod (test_deploy_pod.py)."""

from __future__ import annotations

import copy

import helm_python
import promql_parser
import pytest
import yaml

from extproc.telemetry import metrics

from . import crd_schema
from .helpers import ISTIO, NAMESPACE, REPO, by_kind, container, kinds, merge, objects, render
from .test_deploy_dashboard import exported_names

METRICS = {"metrics": {"enabled": True, "port": 9464}}
ALERTS = {"LlmExtprocReloadRefused", "LlmExtprocSharedCacheDown", "LlmExtprocUpstream5xxRatio"}


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """(metric name, {label: value}) of every vector selector of a PromQL expression."""
    found = []

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append((node.name, {m.name: m.value for m in node.matchers.matchers}))
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def rules(values):
    rule = by_kind(objects(values), "PrometheusRule")
    crd_schema.validate(rule)
    (group,) = rule["spec"]["groups"]
    return {r["alert"]: r for r in group["rules"]}


@pytest.mark.parametrize("values", [METRICS, merge(ISTIO, METRICS)], ids=["sidecar", "istio"])
def test_the_metrics_port_is_wired_from_config_to_service_monitor(values):
    docs = objects(values)
    config = yaml.safe_load(by_kind(docs, "ConfigMap")["data"]["config.yaml"])
    assert config["extproc"]["metrics_listen"] == "0.0.0.0:9464"
    ports = {p["name"]: p["containerPort"] for p in container(docs, "llm-extproc")["ports"]}
    assert ports["metrics"] == 9464
    service = by_kind(docs, "Service")
    (service_port,) = [p for p in service["spec"]["ports"] if p["name"] == "metrics"]
    assert (service_port["port"], service_port["targetPort"]) == (9464, "metrics")
    monitor = by_kind(docs, "ServiceMonitor")
    crd_schema.validate(monitor)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    scraped = {endpoint["port"]: endpoint["path"] for endpoint in monitor["spec"]["endpoints"]}
    if values.get("mode") == "istio":  # no Envoy in the pod
        assert scraped == {"metrics": "/metrics"}
        return
    # Sidecar mode: Envoy's own stats too, on the port of the listener that serves only them.
    assert scraped == {"metrics": "/metrics", "envoy-metrics": "/stats/prometheus"}
    (envoy_service_port,) = [p for p in service["spec"]["ports"] if p["name"] == "envoy-metrics"]
    envoy_ports = {p["name"]: p["containerPort"] for p in container(docs, "envoy")["ports"]}
    assert envoy_service_port["targetPort"] == "envoy-metrics"
    assert envoy_service_port["port"] == envoy_ports["envoy-metrics"] == 9903
    assert "--stats-port 9903" in container(docs, "envoy-config")["command"][2]


def test_metrics_off_adds_nothing():
    docs = objects()
    assert not {"ServiceMonitor", "PrometheusRule"} & set(kinds(docs))
    assert (
        "metrics_listen" not in yaml.safe_load(by_kind(docs, "ConfigMap")["data"]["config.yaml"])["extproc"]
    )
    assert [p["name"] for p in container(docs, "llm-extproc")["ports"]] == ["grpc"]
    assert [p["name"] for p in container(docs, "envoy")["ports"]] == ["http", "envoy-ready"]
    assert "--stats-port" not in container(docs, "envoy-config")["command"][2]
    assert [p["name"] for p in by_kind(docs, "Service")["spec"]["ports"]] == ["http"]
    only_port = objects(merge(METRICS, {"metrics": {"serviceMonitor": {"enabled": False}}}))
    assert "ServiceMonitor" not in kinds(only_port) and "PrometheusRule" in kinds(only_port)


def test_a_config_that_sets_metrics_listen_must_agree_with_the_port():
    kept = merge(METRICS, {"config": {"extproc": {"metrics_listen": "[::]:9464"}}})
    config = yaml.safe_load(by_kind(objects(kept), "ConfigMap")["data"]["config.yaml"])
    assert config["extproc"]["metrics_listen"] == "[::]:9464"
    with pytest.raises(helm_python.HelmRenderError, match=r"metrics\.port"):
        render(merge(METRICS, {"config": {"extproc": {"metrics_listen": "0.0.0.0:9100"}}}))


def test_alerts_select_only_what_the_sidecar_exports():
    found = rules(METRICS)
    assert set(found) == ALERTS
    exported = exported_names()
    service = by_kind(objects(METRICS), "Service")["metadata"]["name"]
    used = set()
    for name, rule in found.items():
        chosen = selectors(rule["expr"])
        assert chosen, name
        for metric, labels in chosen:
            assert metric in exported, f"{name}: {metric} is not exported by the sidecar"
            assert labels.get("job") == service, f"{name}: {metric} is not limited to this release's job"
            used.add((metric, labels.get("result"), labels.get("status_class")))
        assert rule["labels"]["severity"] and rule["annotations"]["summary"], name
    # The label values the sidecar writes (extproc/ops/reload.py, metrics.status_class).
    assert 'RELOADS.labels("refused")' in (REPO / "extproc/ops/reload.py").read_text()
    assert ("llm_extproc_reloads_total", "refused", None) in used
    assert ("llm_extproc_upstream_responses_total", None, metrics.status_class(503)) in used
    assert ("llm_extproc_cache_backend_up", None, None) in used


def test_the_ratio_threshold_is_a_value():
    expr = rules(merge(METRICS, {"metrics": {"prometheusRule": {"upstream5xxRatio": 0.2}}}))[
        "LlmExtprocUpstream5xxRatio"
    ]["expr"]
    assert expr.rstrip().endswith("> 0.2")
    assert promql_parser.parse(expr)


def test_the_promql_check_bites():
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(llm_extproc_reloads_total[5m])")
    assert selectors('llm_extproc_reload_total{result="refused"}')[0][0] not in exported_names()


def test_the_monitoring_crd_schemas_bite():
    """The ServiceMonitor and PrometheusRule checks can fail: a misspelled endpoint field, a Prometheus
    duration in another form, a rule both alerting and recording, a recording rule with `for`."""
    monitor = by_kind(objects(METRICS), "ServiceMonitor")
    rule = by_kind(objects(METRICS), "PrometheusRule")
    misspelled = copy.deepcopy(monitor)
    misspelled["spec"]["endpoints"][0]["scrapeInterval"] = "30s"
    bad_interval = copy.deepcopy(monitor)
    bad_interval["spec"]["endpoints"][0]["interval"] = "1.5m"
    both = copy.deepcopy(rule)
    both["spec"]["groups"][0]["rules"][0]["record"] = "llm_extproc:reloads_refused:increase15m"
    recording = copy.deepcopy(rule)
    recording["spec"]["groups"][0]["rules"][1].pop("alert")
    recording["spec"]["groups"][0]["rules"][1]["record"] = "llm_extproc:cache_backend_up:min"
    for broken, message in [
        (misspelled, "scrapeInterval"),
        (bad_interval, "1.5m"),
        (both, "either an alerting rule"),
        (recording, "recording rule has no for"),
    ]:
        with pytest.raises(crd_schema.CRDValidationError, match=message):
            crd_schema.validate(broken)

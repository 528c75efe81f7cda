"""deploy/grafana/llm-extproc.json queries only metrics the sidecar exports, and covers what operators watch.

The exported names come from prometheus_client's registry once the sidecar's modules are imported, plus
the collectors `serve` registers (cache state, event loop tasks), with the suffixes Prometheus gives each
type: `_total` for counters, `_bucket`/`_sum`/`_count` for histograms.
"""

import asyncio
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

import extproc.ops.server  # noqa: F401  (imports every module that defines a metric)
from extproc.telemetry import metrics

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "llm-extproc.json"

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count"),
}
# PromQL words that look like names but are not metrics.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
_KEYWORDS |= {"and", "or", "unless", "inf", "nan"}
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def exported_names() -> set[str]:
    families = list(REGISTRY.collect())
    families += metrics.CacheCollector(lambda: [SimpleNamespace(state="up", outages=0)]).collect()
    loop = asyncio.new_event_loop()
    try:
        families += metrics.TaskCollector(loop).collect()
    finally:
        loop.close()
    return {family.name + suffix for family in families for suffix in _SUFFIXES[family.type]}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: every name that is not a function, a keyword, a
    label (inside `{}` or a `by (...)` list), a string, a duration or a number."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    names = set()
    for match in _NAME.finditer(text):
        after = text[match.end() :].lstrip()
        if after.startswith("(") or match.group() in _KEYWORDS:
            continue  # a function or an operator
        if match.start() > 0 and (text[match.start() - 1].isdigit() or text[match.start() - 1] in ".$"):
            continue  # part of a number (1e3) or a variable ($job)
        names.add(match.group())
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    """Every PromQL the dashboard runs: (where, expression), panels and template variables alike."""
    board = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']!r}", target["expr"]))
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        found = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query or "")
        if variable["type"] == "query":
            assert found, f"variable {variable['name']}: unexpected query {query!r}"
            queries.append((f"variable {variable['name']!r}", found.group(1)))
    return queries


def test_the_parser_finds_metric_names_and_skips_the_rest():
    expr = (
        'histogram_quantile(0.99, sum by (le, handler) (rate(a_seconds_bucket{job=~"$job",x="y z"}'
        "[$__rate_interval]))) / ignoring(le) b_total offset 5m + 1e3 * on(x) group_left(y) c"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c"}


def test_exported_names_carry_the_type_suffixes():
    names = exported_names()
    assert {"llm_extproc_requests_total", "llm_extproc_hook_duration_seconds_bucket"} <= names
    assert {"gen_ai_client_token_usage_sum", "llm_extproc_in_flight_requests"} <= names
    assert {"llm_extproc_cache_backend_up", "llm_extproc_asyncio_tasks"} <= names
    assert "llm_extproc_requests" not in names and "llm_extproc_hook_duration_seconds" not in names


@pytest.mark.parametrize("where,expr", dashboard_queries())
def test_every_query_selects_only_exported_metrics(where, expr):
    names = metric_names(expr)
    assert names, f"{where}: no metric in {expr!r}"
    unknown = names - exported_names()
    assert not unknown, f"{where}: {sorted(unknown)} not exported by the sidecar"


def test_the_dashboard_covers_what_operators_watch():
    used = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    for wanted in (
        "llm_extproc_requests_total",
        "llm_extproc_refusals_total",
        "llm_extproc_hook_duration_seconds_bucket",
        "llm_extproc_in_flight_requests",
        "llm_extproc_reloads_total",
        "llm_extproc_cache_backend_up",
        "gen_ai_client_token_usage_sum",
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_server_time_to_first_token_seconds_bucket",
    ):
        assert wanted in used, f"the dashboard shows no {wanted}"


def test_panels_have_unique_ids_and_use_the_datasource_variable():
    board = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    assert board["uid"] == "llm-extproc"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]

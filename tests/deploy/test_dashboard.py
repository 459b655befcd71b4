"""deploy/grafana-dashboard.json: a Grafana dashboard over the bot's metrics.

METRICS is the contract with the metrics registry (bot's /metrics): the names, kinds and
labels the dashboard may use. Every query names only these (histograms with their _bucket,
_sum and _count series), groups and filters only by their labels, and every metric of the
contract is shown somewhere.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.deploy.files import DASHBOARD

METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "animagine_jobs_total": ("counter", frozenset({"outcome"})),
    "animagine_render_seconds": ("histogram", frozenset({"size", "worker"})),
    "animagine_queue_wait_seconds": ("histogram", frozenset({"size", "worker"})),
    "animagine_queue_jobs_waiting": ("gauge", frozenset()),
    "animagine_queue_members_waiting": ("gauge", frozenset()),
    "animagine_images_withheld_total": ("counter", frozenset({"reason"})),
    "animagine_prompts_refused_total": ("counter", frozenset({"reason"})),
    "animagine_deliveries_pending": ("gauge", frozenset()),
    "animagine_delivery_retries_total": ("counter", frozenset()),
    "animagine_gpu_memory_used_bytes": ("gauge", frozenset({"worker"})),
    "animagine_workers_up": ("gauge", frozenset()),
    "animagine_discord_rest_request_duration_seconds": (
        "histogram",
        frozenset({"method", "route"}),
    ),
    "animagine_discord_rate_limit_hits_total": ("counter", frozenset({"scope"})),
    "animagine_discord_gateway_latency_seconds": ("gauge", frozenset({"shard"})),
    "animagine_requests_refused_total": ("counter", frozenset({"reason"})),
    "animagine_event_loop_stall_seconds": ("gauge", frozenset()),
}
# In the registry but not worth a panel.
NOT_ON_DASHBOARD: dict[str, tuple[str, frozenset[str]]] = {
    "animagine_build_info": ("gauge", frozenset({"version"})),
}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
# Labels every series has from Prometheus' scrape.
SCRAPE_LABELS = frozenset({"job", "instance"})


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _panels() -> list[dict[str, Any]]:
    out = []
    for panel in _dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return [p for p in out if p["type"] != "row"]


def _metric(series: str) -> tuple[str, str]:
    """(contract name, series suffix) of a series name; fails for names not in METRICS."""
    if series in METRICS and METRICS[series][0] != "histogram":
        return series, ""
    for suffix in HISTOGRAM_SERIES:
        base = series.removesuffix(suffix)
        if base != series and METRICS.get(base, ("",))[0] == "histogram":
            return base, suffix
    raise AssertionError(f"{series} is not a metric of the contract")


SERIES = re.compile(r"\b(animagine_[a-z0-9_]+)\b(\{[^}]*\})?")
BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def _expressions() -> list[tuple[str, str, str]]:
    """(panel title, expr, legend) of every query, template variables included."""
    out = [
        (p["title"], t["expr"], t.get("legendFormat", "")) for p in _panels() for t in p["targets"]
    ]
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            out.append((f"${variable['name']}", text, ""))
    return out


def test_it_is_a_grafana_dashboard() -> None:
    data = _dashboard()
    assert data["schemaVersion"] >= 36
    assert data["title"]
    assert data["uid"]
    ids = [p["id"] for p in data["panels"]] + [
        p["id"] for p in _panels() if p not in data["panels"]
    ]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_every_panel_has_a_datasource_and_a_query() -> None:
    panels = _panels()
    assert len(panels) >= 10
    for panel in panels:
        title = panel.get("title")
        assert title, f"panel {panel['id']} has no title"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel.get("gridPos", {}).keys() >= {"h", "w", "x", "y"}, title
        targets = panel.get("targets")
        assert targets, f"{title}: no query"
        for target in targets:
            assert target.get("expr", "").strip(), title
            assert target.get("refId"), title
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], title


@pytest.mark.parametrize(("title", "expr", "legend"), _expressions(), ids=lambda v: str(v)[:40])
def test_queries_use_only_the_contract(title: str, expr: str, legend: str) -> None:
    found = SERIES.findall(expr)
    assert found, f"{title}: {expr} reads no animagine_* metric"
    labels: set[str] = set(SCRAPE_LABELS)
    histogram = False
    for series, matchers in found:
        name, suffix = _metric(series)
        labels |= METRICS[name][1]
        histogram |= suffix == "_bucket"
        for label in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers or ""):
            assert label in METRICS[name][1] | SCRAPE_LABELS, f"{title}: {series} has no {label}"
    if histogram:
        labels.add("le")
    for group in BY.findall(expr):
        for label in filter(None, (x.strip() for x in group.split(","))):
            assert label in labels, f"{title}: grouped by {label}, which {found} lack"
    for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
        assert label in labels - {"le"}, f"{title}: legend shows {label}, which is not kept"
    if "histogram_quantile" in expr:
        assert histogram, f"{title}: a quantile of a histogram's _bucket series"
        assert re.search(r"\bby\s*\([^)]*\ble\b", expr), f"{title}: by (le)"


def test_every_metric_of_the_contract_is_shown() -> None:
    shown = {_metric(s)[0] for _, expr, _ in _expressions() for s, _ in SERIES.findall(expr)}
    assert shown == set(METRICS), f"not shown: {sorted(set(METRICS) - shown)}"


def test_the_contract_check_is_not_vacuous() -> None:
    with pytest.raises(AssertionError):
        _metric("animagine_render_seconds")  # a histogram is read through its series
    with pytest.raises(AssertionError):
        _metric("animagine_jobs")
    assert _metric("animagine_render_seconds_bucket") == ("animagine_render_seconds", "_bucket")


def test_the_contract_is_what_the_bot_exposes() -> None:
    """The registry the bot serves at /metrics has exactly the contract's metrics, kinds and
    labels (with one sample of each on-demand gauge, as after a scrape's sampling)."""
    from bot.observability.metrics import LoopWatch, Metrics, Snapshot

    metrics = Metrics()
    metrics.snapshot = Snapshot(
        jobs_waiting=0,
        members_waiting=0,
        deliveries_pending=0,
        workers_up=1,
        gpu_memory_used_bytes={"local": 1},
        gateway_latency_seconds={"0": 0.05},
    )
    metrics.loop_watch = LoopWatch()
    metrics.job_rendered("832x1216", "local", 1.0)
    metrics.job_started("832x1216", "local", 0.5)
    exposed: dict[str, tuple[str, frozenset[str]]] = {}
    for family in metrics.registry.collect():
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        name = family.name + "_total" if family.type == "counter" else family.name
        exposed[name] = (family.type, frozenset(labels))
    expected = {**METRICS, **NOT_ON_DASHBOARD}
    assert set(exposed) == set(expected)
    for name, (kind, labels) in exposed.items():
        assert kind == expected[name][0], name
        if labels:  # families with no sample yet show no labels
            assert labels == expected[name][1], name

"""Prometheus metrics of plugin calls: how many, how they ended, how long they took."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PLUGIN_CALLS = Counter(
    "clawdbot_plugin_calls_total",
    "Plugin calls by plugin, kind, stage and outcome (ok, error, timeout, skipped)",
    ["plugin", "kind", "stage", "status"],
)
PLUGIN_LATENCY = Histogram(
    "clawdbot_plugin_latency_seconds",
    "Duration of one plugin call",
    ["plugin", "kind", "stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PLUGIN_RELOADS = Counter(
    "clawdbot_plugin_reloads_total", "plugins.yaml reloads (SIGHUP) by result", ["result"]
)
PLUGINS_LOADED = Gauge("clawdbot_plugins_loaded", "Enabled plugin instances in the active set")

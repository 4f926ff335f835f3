"""What is written about ``/metrics`` matches what it exports: the Grafana
dashboard (docs/grafana/lbframe.json) uses only exported metric names and
every family; the table in docs/admin.md lists every family and no other."""

from __future__ import annotations

import json
import os
import re

from twisted.trial.unittest import SynchronousTestCase

from lbframe.admin.metrics import make_registry, render_metrics
from tests.admin.test_web import add_persistence, make_runtime
from tests.examples.test_quickstart import ROOT

NAME = re.compile(r"\blbframe_[a-z0-9_]+\b")
#: PromQL words that look like metric names but are not (none today)
NOT_METRICS: set[str] = set()
#: families exported only for ``protocol = routed`` or ``nat`` virtual servers
#: (which need nftables); checked against the collector's source instead
ROUTED_ONLY = {"lbframe_next_hop_flows_total", "lbframe_next_hop_packets_total",
               "lbframe_next_hop_bytes_total", "lbframe_routed_dropped_packets_total"}


def exported() -> set[str]:
    """Every family and sample name a scrape shows."""
    runtime = make_runtime()
    add_persistence(runtime)
    text = render_metrics(make_registry(lambda: runtime)).decode()
    names = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    names |= set(re.findall(r"^(lbframe_[a-z0-9_]+)[{ ]", text, re.M))
    return names | ROUTED_ONLY


def families() -> set[str]:
    runtime = make_runtime()
    text = render_metrics(make_registry(lambda: runtime)).decode()
    return set(re.findall(r"^# TYPE (\S+)", text, re.M)) | ROUTED_ONLY


def dashboard_exprs() -> list[str]:
    with open(os.path.join(ROOT, "docs", "grafana", "lbframe.json")) as f:
        dash = json.load(f)
    exprs = []

    def walk(obj):
        if isinstance(obj, dict):
            for key, value in obj.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    exprs.append(value)
                elif key == "query" and isinstance(value, str):
                    exprs.append(value)
                else:
                    walk(value)
        elif isinstance(obj, list):
            for item in obj:
                walk(item)
    walk(dash)
    return exprs


class RoutedOnlyTests(SynchronousTestCase):
    def test_the_collector_defines_them(self):
        import lbframe.admin.metrics as metrics

        with open(metrics.__file__) as f:
            source = f.read()
        for name in ROUTED_ONLY:
            self.assertIn(f'"{name}"', source)


class GrafanaDashboardTests(SynchronousTestCase):
    def test_only_exported_names(self):
        names = exported()
        used = {n for e in dashboard_exprs() for n in NAME.findall(e)} - NOT_METRICS
        self.assertTrue(used)
        self.assertEqual(sorted(used - names), [], "the dashboard uses metrics that do not exist")

    def test_every_family_has_a_panel(self):
        used = {n for e in dashboard_exprs() for n in NAME.findall(e)}
        self.assertEqual(sorted(families() - used), [])

    def test_panels_have_unique_ids_and_fit_the_grid(self):
        with open(os.path.join(ROOT, "docs", "grafana", "lbframe.json")) as f:
            dash = json.load(f)
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        for p in dash["panels"]:
            g = p["gridPos"]
            self.assertLessEqual(g["x"] + g["w"], 24, p["title"])


class MetricsTableTests(SynchronousTestCase):
    def test_admin_md_lists_every_family(self):
        with open(os.path.join(ROOT, "docs", "admin.md")) as f:
            text = f.read()
        section = text[text.index("## `/metrics`"):]
        section = section[:section.index("\n## ", 1)]
        rows = [line for line in section.splitlines() if line.startswith("| `lbframe_")]
        listed = {n for line in rows for n in NAME.findall(line.split("|")[1])}
        self.assertEqual(sorted(families() - listed), [], "families missing from the table")
        self.assertEqual(sorted(listed - families()), [], "the table lists what is not exported")

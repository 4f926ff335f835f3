"""``/metrics``: the runtime in Prometheus text format (version 0.0.4).

:class:`RuntimeCollector` reads the run-time objects at scrape time, so the
data path keeps no metric objects of its own. Each admin service has its own
``CollectorRegistry`` (never prometheus_client's global one), so two sites in
one process, or two tests, never see each other's metrics.

Monitor checks: the runtime counts checks per monitor and member, but not
passed and failed apart. ``lbframe_monitor_checks_total`` therefore has the
labels ``pool``, ``member``, ``monitor`` and, only when the runtime's
``CheckState`` also counts failures (a ``checks_failed`` attribute),
``result`` (``ok``/``fail``) as the contract describes.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lbframe import __version__
from lbframe.admin.web import Endpoint, send_body, send_error
from lbframe.runtime import CheckState

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

#: whether the runtime counts failed checks apart (see the module docstring)
SPLIT_RESULTS = hasattr(CheckState(), "checks_failed")
RESULT_LABEL = ["result"] if SPLIT_RESULTS else []

MEMBER_STATES = ("up", "down", "draining", "disabled")
MEMBER = ["pool", "member"]


class RuntimeCollector:
    """A prometheus_client collector over a :class:`lbframe.service.SiteRuntime`
    (``get_runtime()`` is called on every scrape)."""

    def __init__(self, get_runtime: Callable[[], object]):
        self.get_runtime = get_runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self.get_runtime()
        yield from self._members(runtime)
        yield from self._monitors(runtime)
        yield from self._virtuals(runtime)
        yield from self._site(runtime)

    def _members(self, runtime) -> Iterator[Metric]:
        up = GaugeMetricFamily("lbframe_member_up",
                               "1 when the member takes new connections (state up), else 0",
                               labels=MEMBER)
        healthy = GaugeMetricFamily("lbframe_member_healthy",
                                    "1 while every monitor of the member passes and passive "
                                    "health has not taken it out", labels=MEMBER)
        passive = GaugeMetricFamily("lbframe_member_passive_down",
                                    "1 while passive health holds the member out "
                                    "(max_fails failures in a row)", labels=MEMBER)
        state = GaugeMetricFamily("lbframe_member_state",
                                  "1 for the member's current state (up, down, draining, "
                                  "disabled)", labels=MEMBER + ["state"])
        weight = GaugeMetricFamily("lbframe_member_weight", "current weight", labels=MEMBER)
        active = GaugeMetricFamily("lbframe_member_connections_active",
                                   "connections open to the member", labels=MEMBER)
        total = CounterMetricFamily("lbframe_member_connections_total",
                                    "connections sent to the member", labels=MEMBER)
        failures = CounterMetricFamily("lbframe_member_failures_total",
                                       "connections to the member that failed", labels=MEMBER)
        bytes_in = CounterMetricFamily("lbframe_member_bytes_in_total",
                                       "bytes from clients relayed to the member "
                                       "(counted when a connection closes)", labels=MEMBER)
        bytes_out = CounterMetricFamily("lbframe_member_bytes_out_total",
                                        "bytes from the member relayed to clients "
                                        "(counted when a connection closes)", labels=MEMBER)
        response = GaugeMetricFamily("lbframe_member_response_seconds",
                                     "moving average of the member's response time "
                                     "(only once measured)", labels=MEMBER)
        most = GaugeMetricFamily("lbframe_member_connections_max",
                                 "the most connections open to the member at once",
                                 labels=MEMBER)
        retries = CounterMetricFamily("lbframe_member_retries_total",
                                      "failed connects to the member retried on another "
                                      "member", labels=MEMBER)
        errors_5xx = CounterMetricFamily("lbframe_member_responses_5xx_total",
                                         "http responses with a 5xx status from the member",
                                         labels=MEMBER)
        downs = CounterMetricFamily("lbframe_member_downs_total",
                                    "times the member went down", labels=MEMBER)
        since = GaugeMetricFamily("lbframe_member_state_since_seconds",
                                  "when the member entered its current state (Unix time)",
                                  labels=MEMBER)
        for pname, pool in runtime.pools.items():
            for mname, m in pool.members.items():
                labels = [pname, mname]
                current = m.state
                up.add_metric(labels, 1 if current == "up" else 0)
                healthy.add_metric(labels, 1 if m.healthy else 0)
                passive.add_metric(labels, 1 if m.passive.down else 0)
                for s in MEMBER_STATES:
                    state.add_metric(labels + [s], 1 if current == s else 0)
                weight.add_metric(labels, m.weight)
                active.add_metric(labels, m.active)
                total.add_metric(labels, m.total)
                failures.add_metric(labels, m.failures)
                bytes_in.add_metric(labels, m.bytes_in)
                bytes_out.add_metric(labels, m.bytes_out)
                if m.response_time is not None:
                    response.add_metric(labels, m.response_time)
                most.add_metric(labels, getattr(m, "max_active", 0))
                retries.add_metric(labels, getattr(m, "retries", 0))
                errors_5xx.add_metric(labels, getattr(m, "responses_5xx", 0))
                since.add_metric(labels, getattr(m, "since", 0.0))
                downs.add_metric(labels, getattr(m, "downs", 0))
        yield from (up, healthy, passive, state, weight, active, total, failures, bytes_in, bytes_out,
                    response, most, retries, errors_5xx, since, downs)

    def _monitors(self, runtime) -> Iterator[Metric]:
        checks = CounterMetricFamily("lbframe_monitor_checks_total",
                                     "checks run by a monitor against a member",
                                     labels=MEMBER + ["monitor"] + RESULT_LABEL)
        passing = GaugeMetricFamily("lbframe_monitor_up",
                                    "1 while the monitor counts the member as up (after "
                                    "rise/fall)", labels=MEMBER + ["monitor"])
        duration = GaugeMetricFamily("lbframe_monitor_duration_seconds",
                                     "how long the last check took", labels=MEMBER + ["monitor"])
        for pname, pool in runtime.pools.items():
            for mname, m in pool.members.items():
                for monitor, cs in m.checks.items():
                    labels = [pname, mname, monitor]
                    if SPLIT_RESULTS:
                        failed = cs.checks_failed
                        checks.add_metric(labels + ["ok"], cs.checks_total - failed)
                        checks.add_metric(labels + ["fail"], failed)
                    else:
                        checks.add_metric(labels, cs.checks_total)
                    passing.add_metric(labels, 1 if cs.up else 0)
                    if cs.last_duration is not None:
                        duration.add_metric(labels, cs.last_duration)
        yield from (checks, passing, duration)

    def _virtuals(self, runtime) -> Iterator[Metric]:
        active = GaugeMetricFamily("lbframe_virtual_connections_active",
                                   "client connections open on the virtual server",
                                   labels=["virtual"])
        total = CounterMetricFamily("lbframe_virtual_connections_total",
                                    "client connections admitted by the virtual server",
                                    labels=["virtual"])
        refused = CounterMetricFamily("lbframe_virtual_refused_total",
                                      "client connections refused for want of a member",
                                      labels=["virtual"])
        requests = CounterMetricFamily("lbframe_virtual_requests_total",
                                       "http requests received by the virtual server",
                                       labels=["virtual"])
        responses = CounterMetricFamily("lbframe_virtual_responses_total",
                                        "http responses sent by the virtual server, by status "
                                        "class (lbframe's own error and sorry pages included)",
                                        labels=["virtual", "code"])
        by_reason = CounterMetricFamily("lbframe_virtual_refusals_total",
                                        "client connections or requests refused, by reason "
                                        "(no_member, maxconn, queue_full, queue_timeout, sorry, "
                                        "bad_request, source_limit, member_failed, resources)",
                                        labels=["virtual", "reason"])
        most = GaugeMetricFamily("lbframe_virtual_connections_max",
                                 "the most client connections open at once",
                                 labels=["virtual"])
        v_in = CounterMetricFamily("lbframe_virtual_bytes_in_total",
                                   "bytes received from clients (counted when a connection "
                                   "or request ends)", labels=["virtual"])
        v_out = CounterMetricFamily("lbframe_virtual_bytes_out_total",
                                    "bytes sent to clients (counted when a connection or "
                                    "request ends)", labels=["virtual"])
        for name, v in runtime.virtuals.items():
            active.add_metric([name], v.active)
            total.add_metric([name], v.total)
            refused.add_metric([name], v.refused)
            for reason, count in (getattr(v, "refusals", None) or {}).items():
                by_reason.add_metric([name, reason], count)
            most.add_metric([name], getattr(v, "max_active", 0))
            v_in.add_metric([name], getattr(v, "bytes_in", 0))
            v_out.add_metric([name], getattr(v, "bytes_out", 0))
            # Counted by request-aware protocols (http); stay 0 for tcp.
            n = getattr(v, "requests", None)
            if n is not None:
                requests.add_metric([name], n)
            for code, count in sorted((getattr(v, "responses", None) or {}).items()):
                responses.add_metric([name, str(code)], count)
        yield from (active, total, refused, requests, responses, by_reason, most, v_in, v_out)
        yield from self._next_hops(runtime)
        yield from self._udp(runtime)
        queue = GaugeMetricFamily("lbframe_pool_queue_length",
                                  "connections waiting for a member of the pool "
                                  "(queue_timeout)", labels=["pool"])
        for name, pool in runtime.pools.items():
            queue.add_metric([name], len(pool.queue))
        yield queue

    def _next_hops(self, runtime) -> Iterator[Metric]:
        """protocol routed: what the kernel steered to each next hop."""
        routed = [name for name, v in runtime.virtuals.items()
                  if v.spec.protocol in ("routed", "nat")]
        if not routed:
            return
        from lbframe.protocols.routed.program import next_hop_status
        labels = ["virtual", "member"]
        packets = CounterMetricFamily("lbframe_next_hop_packets_total",
                                      "packets a routed virtual server steered to the next hop",
                                      labels=labels)
        nbytes = CounterMetricFamily("lbframe_next_hop_bytes_total",
                                     "bytes a routed virtual server steered to the next hop",
                                     labels=labels)
        flows = CounterMetricFamily("lbframe_next_hop_flows_total",
                                    "new flows a routed virtual server steered to the next hop",
                                    labels=labels)
        dropped = CounterMetricFamily("lbframe_routed_dropped_packets_total",
                                      "packets a routed virtual server dropped: no live next hop",
                                      labels=["virtual"])
        for name in routed:
            status = next_hop_status(name)
            for member, c in status["next_hops"].items():
                packets.add_metric([name, member], c["packets"])
                nbytes.add_metric([name, member], c["bytes"])
                flows.add_metric([name, member], c["flows"])
            dropped.add_metric([name], status["dropped_packets"])
        yield from (packets, nbytes, flows, dropped)
    @staticmethod
    def _udp(runtime) -> Iterator[Metric]:
        """protocol udp: datagrams and bytes each way, flows live, evicted,
        expired, and the datagrams not forwarded."""
        udp = [(name, v.udp) for name, v in runtime.virtuals.items()
               if getattr(v, "udp", None) is not None]
        if not udp:
            return
        datagrams = CounterMetricFamily("lbframe_udp_datagrams_total",
                                        "datagrams forwarded, by direction (in: from "
                                        "clients, out: replies to clients)",
                                        labels=["virtual", "direction"])
        nbytes = CounterMetricFamily("lbframe_udp_bytes_total", "payload bytes forwarded, "
                                     "by direction", labels=["virtual", "direction"])
        flows = GaugeMetricFamily("lbframe_udp_flows", "live flows in the flow table",
                                  labels=["virtual"])
        ended = CounterMetricFamily("lbframe_udp_flows_ended_total", "flows ended by "
                                    "max_flows (evicted) or timeout_client (expired)",
                                    labels=["virtual", "why"])
        dropped = CounterMetricFamily("lbframe_udp_dropped_total", "datagrams not "
                                      "forwarded (no member, paused, send failed)",
                                      labels=["virtual"])
        unreachable = CounterMetricFamily("lbframe_udp_member_unreachable_total",
                                          "ICMP port unreachable from members",
                                          labels=["virtual"])
        for name, c in udp:
            datagrams.add_metric([name, "in"], c.datagrams_in)
            datagrams.add_metric([name, "out"], c.datagrams_out)
            nbytes.add_metric([name, "in"], c.bytes_in)
            nbytes.add_metric([name, "out"], c.bytes_out)
            flows.add_metric([name], c.flows)
            ended.add_metric([name, "evicted"], c.evicted)
            ended.add_metric([name, "expired"], c.expired)
            dropped.add_metric([name], c.dropped)
            unreachable.add_metric([name], c.unreachable)
        yield from (datagrams, nbytes, flows, ended, dropped, unreachable)

    def _site(self, runtime) -> Iterator[Metric]:
        state = getattr(runtime.redundancy, "state", "standalone")
        yield GaugeMetricFamily("lbframe_redundancy_master",
                                "1 while this node is the master of its pair",
                                value=1 if state == "master" else 0)
        info = GaugeMetricFamily("lbframe_redundancy_state", "1 for this node's redundancy "
                                 "driver and state", labels=["driver", "state"])
        info.add_metric([runtime.site.redundancy.driver, state], 1)
        yield info
        entries = GaugeMetricFamily("lbframe_persistence_entries",
                                    "entries in a persistence profile's table",
                                    labels=["profile"])
        for name, store in runtime.persistence_stores.items():
            try:
                n = len(store)
            except TypeError:
                continue
            entries.add_metric([name], n)
        yield entries
        yield from self._persistence(runtime)
        build = GaugeMetricFamily("lbframe_build_info", "lbframe's version", labels=["version"])
        build.add_metric([__version__], 1)
        yield build


    def _persistence(self, runtime) -> Iterator[Metric]:
        """Persistence lookups by result, and the memory store's evictions."""
        lookups = CounterMetricFamily("lbframe_persistence_lookups_total",
                                      "requests that carried a persistence key, by result: "
                                      "hit (sent to the entry's member), miss (no entry), "
                                      "replaced (its member was down, disabled or gone)",
                                      labels=["profile", "result"])
        dropped = CounterMetricFamily("lbframe_persistence_dropped_total",
                                      "entries the memory store dropped: evicted (full, "
                                      "least recently used) or expired (idle)",
                                      labels=["profile", "reason"])
        seen = set()
        for balancer in runtime.balancers.values():
            profile = getattr(balancer, "persistence", None)
            if profile is None or profile.name in seen:
                continue
            seen.add(profile.name)
            hits, replaced = profile.hits, profile.replaced
            lookups.add_metric([profile.name, "hit"], hits)
            lookups.add_metric([profile.name, "replaced"], replaced)
            lookups.add_metric([profile.name, "miss"], max(0, profile.lookups - hits - replaced))
        for name, store in runtime.persistence_stores.items():
            if hasattr(store, "evicted"):
                dropped.add_metric([name, "evicted"], store.evicted)
            if hasattr(store, "expired"):
                dropped.add_metric([name, "expired"], store.expired)
        yield from (lookups, dropped)


class WorkersCollector:
    """``workers = N`` (lbframe.workers): the worker processes themselves.
    Their traffic counters are already in the runtime's (the parent adds
    them up), so the other metrics need no label for them."""

    def __init__(self, get_workers: Callable[[], object]):
        self.get_workers = get_workers

    def collect(self) -> Iterator[Metric]:
        workers = self.get_workers()
        if workers is None:
            return
        rows = workers.status()
        up = GaugeMetricFamily("lbframe_worker_up", "1 while worker N runs and serves",
                               labels=["worker"])
        restarts = CounterMetricFamily("lbframe_worker_restarts_total",
                                       "times worker N died and was started again",
                                       labels=["worker"])
        for row in rows:
            up.add_metric([str(row["worker"])], 1 if row["ready"] else 0)
            restarts.add_metric([str(row["worker"])], row["restarts"])
        yield from (up, restarts)


def make_registry(get_runtime: Callable[[], object],
                  get_workers: Callable[[], object] | None = None) -> CollectorRegistry:
    """A private registry holding one :class:`RuntimeCollector` (and a
    :class:`WorkersCollector` when ``get_workers`` is given)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(get_runtime))
    if get_workers is not None:
        registry.register(WorkersCollector(get_workers))
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry``."""
    return generate_latest(registry)


class MetricsResource(Endpoint):
    """``GET /metrics``."""

    isLeaf = True

    def __init__(self, context):
        super().__init__(context)
        self.registry = make_registry(lambda: context.runtime,
                                      lambda: getattr(context, "workers", None))

    def render_GET(self, request):
        if request.postpath not in ([], [b""]):
            return send_error(request, 404, "nothing at " + request.path.decode("utf-8", "replace"))
        return send_body(request, render_metrics(self.registry), CONTENT_TYPE)

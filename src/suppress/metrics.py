"""Prometheus metrics, served at /metrics. Counted per batch, never per recipient on the hot path.

Under `suppress serve --workers N` (N > 1) every process writes its values to files in
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode, chosen when the variable is set
before this module is first imported), and a scrape, whichever process answers it, sums the files
of all of them: counters and histograms are totals over the processes, including any that have
exited since the server started.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Decided once, as prometheus-client decides where values live when it is first imported.
MULTIPROCESS = bool(os.environ.get(MULTIPROCESS_ENV))

REGISTRY = CollectorRegistry(auto_describe=True)

CHECKS = Counter(
    "suppress_checks",
    "Pre-send check requests answered.",
    ["channel", "purpose"],
    registry=REGISTRY,
)
CHECKED_RECIPIENTS = Counter(
    "suppress_check_recipients",
    "Recipients decided by pre-send checks, by outcome (basis when allowed, reason when denied).",
    ["channel", "allowed", "outcome"],
    registry=REGISTRY,
)
CHECK_SECONDS = Histogram(
    "suppress_check_duration_seconds",
    "Time to decide one check request (decode excluded).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "suppress_http_requests",
    "HTTP requests by route and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
WRITES = Counter("suppress_writes", "State changes written, by kind.", ["kind"], registry=REGISTRY)
DB_READS = Counter(
    "suppress_db_reads",
    "Reads routed to the primary or to a streaming replica (docs/scaling.md).",
    ["target"],
    registry=REGISTRY,
)
REPLICA_STALENESS = Gauge(
    "suppress_replica_staleness_seconds",
    "How old, at most, the state a replica serves was at its last probe (+Inf while it is down).",
    ["replica"],
    registry=REGISTRY,
    multiprocess_mode="livemax",  # with several processes: the worst any live one saw
)


def exposition() -> bytes:
    """The text a scrape of /metrics answers: this process's metrics, or all processes' summed."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)

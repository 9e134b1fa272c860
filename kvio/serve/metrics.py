"""Prometheus metrics of a server: requests and latency by route and status, keys served,
the version each store serves, swaps and swap errors.

With one worker the metrics live in a registry of the app. With ``--workers N`` each worker is
a process of its own; ``kvio serve`` then gives them a shared directory (prometheus-client's
multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, set before the workers start) and
``/metrics`` sums the counters and histograms of every worker, so a scrape answered by any
worker sees all requests. Gauges take the most recent value any worker wrote.
"""
from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

#: seconds; lookups take tens of microseconds, scans of a whole store seconds
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "unmatched"  # the route label of requests no route matched (never the raw path)


class Metrics:
    """The server's metrics.

    Args:
        multiprocess_dir: the directory shared by the workers (multiprocess mode: the
            environment variable ``PROMETHEUS_MULTIPROC_DIR`` must name it before
            prometheus-client is first imported in the process); None for one process.
    """

    def __init__(self, multiprocess_dir: str | None = None):
        self.multiprocess = multiprocess_dir is not None
        self.registry = None if self.multiprocess else CollectorRegistry()
        reg: dict[str, Any] = {"registry": self.registry}
        self.requests = Counter("kvio_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], **reg)
        self.latency = Histogram("kvio_http_request_duration_seconds",
                                 "time to answer a request (until the last byte of a stream)",
                                 ["route", "status"], buckets=LATENCY_BUCKETS, **reg)
        self.keys = Counter("kvio_keys_served", "keys looked up, by store and whether found",
                            ["store", "result"], **reg)
        self.version = Gauge("kvio_store_version_info", "1 for the version a store serves, 0 for "
                             "versions it served before", ["store", "version"],
                             multiprocess_mode="mostrecent", **reg)
        self.commit_seq = Gauge("kvio_store_commit_seq", "commit number of the version served",
                                ["store"], multiprocess_mode="mostrecent", **reg)
        self.swaps = Gauge("kvio_store_swaps", "new versions swapped in since the server started",
                           ["store"], multiprocess_mode="mostrecent", **reg)
        self.swap_errors = Counter("kvio_store_swap_errors", "new versions that could not be "
                                   "swapped in (the store kept serving the last good one)",
                                   ["store"], **reg)
        self._versions: dict[str, str] = {}
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._key_children: dict[tuple[str, str], Any] = {}

    def observe(self, route: str, method: str, status: int, started: float) -> None:
        """Count one answered request that started at ``started`` (``time.perf_counter()``)."""
        elapsed = time.perf_counter() - started
        children = self._request_children.get((route, method, status))
        if children is None:
            # labels() hashes and checks its arguments on every call: look each combination
            # up once (there are a few dozen: routes x methods x statuses).
            code = str(status)
            children = self._request_children[(route, method, status)] = (
                self.requests.labels(route, method, code), self.latency.labels(route, code))
        children[0].inc()
        children[1].observe(elapsed)

    def keys_served(self, store: str, found: int, absent: int) -> None:
        if found:
            self._keys_child(store, "found").inc(found)
        if absent:
            self._keys_child(store, "absent").inc(absent)

    def _keys_child(self, store: str, result: str) -> Any:
        child = self._key_children.get((store, result))
        if child is None:
            child = self._key_children[(store, result)] = self.keys.labels(store, result)
        return child

    def store_version(self, store: str, version: str, commit_seq: int, swaps: int) -> None:
        """Record the version ``store`` serves now."""
        old = self._versions.get(store)
        if old is not None and old != version:
            self.version.labels(store, old).set(0)
        self._versions[store] = version
        self.version.labels(store, version).set(1)
        self.commit_seq.labels(store).set(commit_seq)
        self.swaps.labels(store).set(swaps)
        self.swap_errors.labels(store)  # present (at 0) before the first error

    def swap_error(self, store: str) -> None:
        self.swap_errors.labels(store).inc()

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST

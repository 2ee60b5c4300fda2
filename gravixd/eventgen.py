"""Realistic generated events for `gravixd emit` and the benchmarks.

Request facts look like a small microservice estate: services with their own routes
(templated, as a router reports them), a method mix dominated by GET, status codes with a
production-like distribution (mostly 2xx, a few 4xx, rare 5xx), log-normal latencies whose
median depends on the route (errors and timeouts slower), log-normal payload sizes, a few
attributes, and a unique trace id each. Service events are deploys, restarts, errors and the
like, with severities that match their kind.

Events are JSON-ready dicts with the contract's snake_case field names (DESIGN.md section 1).
Deterministic for a given seed (except the trace id prefix when no seed is given), so tests
and benchmarks can regenerate the same stream. Generation is batched: about 2-3 µs an event.
"""

from __future__ import annotations

import math
import random
from typing import Any, Final

__all__ = ["EventGenerator"]

# service -> (method, route template, median latency ms)
_ROUTES: Final[dict[str, tuple[tuple[str, str, float], ...]]] = {
    "gateway": (("GET", "/healthz", 0.4), ("GET", "/v1/config", 2.0)),
    "users": (
        ("GET", "/users/{id}", 6.0),
        ("PUT", "/users/{id}", 14.0),
        ("POST", "/users", 22.0),
        ("GET", "/users/{id}/orders", 18.0),
    ),
    "search": (("GET", "/search", 35.0), ("GET", "/search/suggest", 8.0)),
    "cart": (
        ("GET", "/cart/{id}", 5.0),
        ("POST", "/cart/{id}/items", 11.0),
        ("DELETE", "/cart/{id}/items/{sku}", 9.0),
    ),
    "checkout": (("POST", "/checkout", 120.0), ("GET", "/checkout/{id}", 10.0)),
    "payments": (("POST", "/payments/{id}/capture", 210.0), ("POST", "/payments", 160.0)),
    "inventory": (("GET", "/inventory/{sku}", 4.0), ("PATCH", "/inventory/{sku}", 12.0)),
}
# Traffic share per service (the gateway's health checks and reads dominate).
_SERVICE_WEIGHTS: Final = {
    "gateway": 12, "users": 25, "search": 20, "cart": 15, "checkout": 8, "payments": 5,
    "inventory": 15,
}  # fmt: skip
# Roughly what a healthy production HTTP estate returns.
_STATUS_WEIGHTS: Final = {
    200: 800, 201: 40, 204: 30, 301: 5, 304: 20, 400: 25, 401: 10, 403: 5, 404: 35,
    409: 5, 429: 5, 500: 10, 502: 3, 503: 5, 504: 2,
}  # fmt: skip
_LATENCY_SIGMA: Final = 0.6  # log-normal spread: p99 is about 4x the median
_REGIONS: Final = ("eu-west-1", "us-east-1", "ap-south-1")
_USER_AGENTS: Final = ("curl/8.5.0", "okhttp/4.12.0", "Mozilla/5.0", "python-httpx/0.27")

_EVENT_KINDS: Final = {
    # kind -> (weight, severity names, message templates)
    "deploy": (10, ("INFO",), ("deployed {service} {version}", "rolled out {version}")),
    "restart": (6, ("WARN", "INFO"), ("container restarted (exit code {code})",)),
    "error": (20, ("ERROR", "ERROR", "FATAL"), ("upstream {peer} timed out after {ms} ms",
                                                 "connection refused by {peer}")),
    "config_change": (5, ("INFO",), ("config reloaded: {count} keys changed",)),
    "scale": (4, ("INFO",), ("scaled from {before} to {after} replicas",)),
    "healthcheck": (30, ("DEBUG", "INFO"), ("health check passed in {ms} ms",)),
    "gc": (25, ("DEBUG",), ("gc pause {ms} ms",)),
}  # fmt: skip


class EventGenerator:
    """Generates batches of facts or events as dicts."""

    def __init__(self, stream: str, seed: int | None = None) -> None:
        if stream not in ("facts", "events"):
            raise ValueError(f"Expected stream `facts` or `events`, got `{stream}`")
        self.stream = stream
        self._rng = random.Random(seed)
        # A random 64-bit prefix per generator and a counter: unique trace ids across
        # emitters without coordination (W3C trace ids are 32 lower-case hex digits).
        self._trace_prefix = f"{self._rng.getrandbits(64):016x}"
        self._count = 0
        self._routes = [(s, m, r, med) for s, routes in _ROUTES.items() for (m, r, med) in routes]
        weights = []
        for service, _, _, _ in self._routes:
            weights.append(_SERVICE_WEIGHTS[service] / len(_ROUTES[service]))
        self._route_weights = weights
        self._statuses = list(_STATUS_WEIGHTS)
        self._status_weights = list(_STATUS_WEIGHTS.values())
        self._kinds = list(_EVENT_KINDS)
        self._kind_weights = [spec[0] for spec in _EVENT_KINDS.values()]

    @property
    def generated(self) -> int:
        return self._count

    def generate(self, count: int, now_unix_nano: int) -> list[dict[str, Any]]:
        """`count` events stamped around `now_unix_nano` (up to 1 ms earlier)."""
        if self.stream == "facts":
            return self._facts(count, now_unix_nano)
        return self._events(count, now_unix_nano)

    def _trace_ids(self, count: int) -> list[str]:
        start = self._count
        self._count += count
        prefix = self._trace_prefix
        return [f"{prefix}{n:016x}" for n in range(start, start + count)]

    def _facts(self, count: int, now_unix_nano: int) -> list[dict[str, Any]]:
        rng = self._rng
        routes = rng.choices(self._routes, self._route_weights, k=count)
        statuses = rng.choices(self._statuses, self._status_weights, k=count)
        trace_ids = self._trace_ids(count)
        lognormal = rng.lognormvariate
        facts = []
        for route, status, trace_id in zip(routes, statuses, trace_ids, strict=True):
            service, method, template, median_ms = route
            if status >= 500:
                median_ms *= 4.0  # errors and timeouts are slow
            elif status in (301, 304, 401, 403, 404, 429):
                median_ms *= 0.3  # rejected early
            bytes_in = (
                int(lognormal(math.log(600), 0.8)) if method in ("POST", "PUT", "PATCH") else 0
            )
            bytes_out = 0 if status in (204, 304) else int(lognormal(math.log(1800), 1.0))
            attributes = {
                "region": rng.choice(_REGIONS),
                "pod": f"{service}-{rng.randrange(12):02d}",
            }
            if rng.random() < 0.4:
                attributes["user_agent"] = rng.choice(_USER_AGENTS)
            facts.append(
                {
                    "timestamp_unix_nano": now_unix_nano - rng.randrange(1_000_000),
                    "service": service,
                    "route": template,
                    "method": method,
                    "status_code": status,
                    "duration_ms": round(lognormal(math.log(median_ms), _LATENCY_SIGMA), 3),
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    "trace_id": trace_id,
                    "attributes": attributes,
                }
            )
        return facts

    def _events(self, count: int, now_unix_nano: int) -> list[dict[str, Any]]:
        rng = self._rng
        kinds = rng.choices(self._kinds, self._kind_weights, k=count)
        trace_ids = self._trace_ids(count)
        services = list(_ROUTES)
        events = []
        for kind, trace_id in zip(kinds, trace_ids, strict=True):
            _, severities, templates = _EVENT_KINDS[kind]
            service = rng.choice(services)
            message = rng.choice(templates).format(
                service=service,
                version=f"v1.{rng.randrange(40)}.{rng.randrange(10)}",
                code=rng.choice((0, 1, 137, 143)),
                peer=rng.choice(services),
                ms=rng.randrange(1, 5000),
                count=rng.randrange(1, 8),
                before=rng.randrange(2, 6),
                after=rng.randrange(2, 12),
            )
            events.append(
                {
                    "timestamp_unix_nano": now_unix_nano - rng.randrange(1_000_000),
                    "service": service,
                    "kind": kind,
                    "severity": rng.choice(severities),
                    "message": message,
                    "trace_id": trace_id,
                    "attributes": {
                        "region": rng.choice(_REGIONS),
                        "pod": f"{service}-{rng.randrange(12):02d}",
                    },
                }
            )
        return events

"""Prometheus metrics for the callout pipeline (extra ``prometheus``).

Off by default: nothing is measured until you attach :class:`PrometheusMetrics`
to a pipeline, and ``prometheus_client`` is imported only then.

==========================================  =========  ==========================================
metric                                      type       meaning
==========================================  =========  ==========================================
``faststream_callout_decisions_total``      counter    decisions, by ``outcome``
``faststream_callout_decision_seconds``     histogram  time from receipt to reply, by ``outcome``
``faststream_callout_requests_in_flight``   gauge      requests being decided right now
``faststream_callout_cache_<counter>_total``  counter  :class:`DecisionCache` hits, misses,
                                                       coalesced, bypassed, negative_hits,
                                                       evictions, by ``cache`` (:meth:`track_cache`)
``faststream_callout_cache_<size>``         gauge      entries, denials, in_flight, by ``cache``
==========================================  =========  ==========================================

``outcome`` is one of ``allowed``, ``denied``, ``error``, ``timeout``,
``throttled``, ``rejected``, ``dropped``, ``signer_failed``. No label carries a
user, an account or anything else a client chooses, so the number of series
stays fixed.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from faststream_callout.core.pipeline import CalloutPipeline, Decision, Outcome

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client import CollectorRegistry

    from faststream_callout.integration.cache import DecisionCache

__all__ = ["DEFAULT_BUCKETS", "PrometheusMetrics"]

# Decisions take well under a millisecond (a table) to about a second (a slow
# identity provider); nats-server gives up after 2 s by default.
DEFAULT_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    1.5,
    2.0,
    5.0,
)


def _prometheus() -> Any:  # noqa: ANN401 - the module, imported on first use
    try:
        import prometheus_client  # noqa: PLC0415 - optional extra, imported on use
    except ImportError as exc:
        raise ImportError(
            "PrometheusMetrics needs prometheus-client: "
            "pip install 'faststream-callout[prometheus]'"
        ) from exc
    return prometheus_client


class PrometheusMetrics:
    """Decision counts, latency and requests in flight, as Prometheus metrics.

    Attach it to the pipelines it should measure::

        metrics = PrometheusMetrics()              # the default registry
        metrics.instrument(pipeline)               # or, with Dishka: ObserverProvider(metrics)
        prometheus_client.start_http_server(9108)  # or serve the registry your own way

    It is also a plain decision observer (``CalloutPipeline(observers=[metrics])``),
    which counts and times decisions; :meth:`instrument` adds the in-flight gauge.

    Args:
        registry: where the metrics are registered; the default registry of
            ``prometheus_client`` if not given. One instance per registry: a
            second one would register the same names twice.
        namespace: the metric name prefix.
        buckets: histogram buckets, in seconds.

    Raises:
        ImportError: ``prometheus-client`` is not installed (extra ``prometheus``).

    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "faststream_callout",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        prometheus = _prometheus()
        registry = prometheus.REGISTRY if registry is None else registry
        self.registry = registry
        self._namespace = namespace
        self._caches: dict[str, DecisionCache] | None = None  # registered on first use
        self._pipelines: weakref.WeakSet[CalloutPipeline] = weakref.WeakSet()
        self.decisions = prometheus.Counter(
            "decisions",
            "Authorization decisions, by outcome.",
            ["outcome"],
            namespace=namespace,
            registry=registry,
        )
        self.latency = prometheus.Histogram(
            "decision_seconds",
            "Time from receipt of an authorization request to its reply, by outcome.",
            ["outcome"],
            namespace=namespace,
            buckets=tuple(buckets),
            registry=registry,
        )
        self.in_flight = prometheus.Gauge(
            "requests_in_flight",
            "Authorization requests being decided right now.",
            namespace=namespace,
            registry=registry,
        )
        # Read from the pipelines at scrape time: no work per request.
        self.in_flight.set_function(self._count_in_flight)
        # Resolve the labelled children once; a decision then costs two lookups.
        self._children = {
            outcome: (self.decisions.labels(outcome.value), self.latency.labels(outcome.value))
            for outcome in Outcome
        }

    def instrument(self, pipeline: CalloutPipeline) -> CalloutPipeline:
        """Measure ``pipeline``: observe its decisions and count its requests in flight."""
        if self not in pipeline.observers:
            pipeline.observers.append(self)
        self._pipelines.add(pipeline)
        return pipeline

    def __call__(self, decision: Decision) -> None:
        """Count and time one decision (a pipeline observer)."""
        counter, histogram = self._children[decision.outcome]
        counter.inc()
        histogram.observe(decision.latency)

    def track_cache(self, cache: DecisionCache, name: str = "default") -> DecisionCache:
        """Export ``cache``'s counters (read at scrape time), labelled ``cache=name``."""
        if self._caches is None:
            self._caches = {}
            self.registry.register(_CacheCollector(self._caches, self._namespace))
        if name in self._caches and self._caches[name] is not cache:
            raise ValueError(f"a different cache is already tracked as {name!r}")
        self._caches[name] = cache
        return cache

    def _count_in_flight(self) -> float:
        return float(sum(pipeline.in_flight for pipeline in list(self._pipelines)))

    def __repr__(self) -> str:
        return f"PrometheusMetrics(pipelines={len(self._pipelines)})"


_CACHE_COUNTERS: Final = ("hits", "misses", "coalesced", "bypassed", "negative_hits", "evictions")
_CACHE_GAUGES: Final = ("entries", "denials", "in_flight")


class _CacheCollector:
    """Reads the tracked caches' stats when Prometheus scrapes: no work per login."""

    def __init__(self, caches: dict[str, DecisionCache], namespace: str) -> None:
        self._caches = caches
        self._namespace = namespace

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415

        stats = {name: cache.stats for name, cache in self._caches.items()}
        for field in _CACHE_COUNTERS:
            family = CounterMetricFamily(
                f"{self._namespace}_cache_{field}", f"DecisionCache {field}.", labels=["cache"]
            )
            for name, values in stats.items():
                family.add_metric([name], getattr(values, field))
            yield family
        for field in _CACHE_GAUGES:
            gauge = GaugeMetricFamily(
                f"{self._namespace}_cache_{field}", f"DecisionCache {field} now.", labels=["cache"]
            )
            for name, values in stats.items():
                gauge.add_metric([name], getattr(values, field))
            yield gauge

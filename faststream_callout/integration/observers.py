"""Attach decision observers (metrics, tracing, audit) to pipelines, with or without Dishka."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from dishka import Provider, Scope

from faststream_callout.core.pipeline import CalloutPipeline, Decision

__all__ = ["Instrument", "ObserverProvider", "observe"]


@runtime_checkable
class Instrument(Protocol):
    """An observer that needs the pipeline itself (e.g. to count requests in flight)."""

    def instrument(self, pipeline: CalloutPipeline) -> CalloutPipeline:
        """Attach to ``pipeline`` (adding itself to its observers) and return it."""
        ...


def observe(pipeline: CalloutPipeline, *observers: Callable[[Decision], object]) -> CalloutPipeline:
    """Attach ``observers`` to ``pipeline`` (each once) and return the pipeline.

    An :class:`Instrument` (like :class:`~faststream_callout.integration.metrics.PrometheusMetrics`)
    attaches itself with its ``instrument`` method; any other callable is appended
    to ``pipeline.observers``.
    """
    for observer in observers:
        if isinstance(observer, Instrument):
            observer.instrument(pipeline)
        elif observer not in pipeline.observers:
            pipeline.observers.append(observer)
    return pipeline


class ObserverProvider(Provider):
    """Decorates the container's :class:`CalloutPipeline` with decision observers.

    List it after :class:`~faststream_callout.CalloutProvider` (Dishka decorates
    what is already provided)::

        container = make_async_container(
            CalloutProvider(),
            Policy(),
            ObserverProvider(PrometheusMetrics(), DecisionSpanAttributes()),
        )

    Without it the pipeline has only its decision log: nothing is measured.
    """

    def __init__(self, *observers: Callable[[Decision], object]) -> None:
        super().__init__(scope=Scope.APP)
        chosen = tuple(observers)

        def observed(pipeline: CalloutPipeline) -> CalloutPipeline:
            return observe(pipeline, *chosen)

        observed.__qualname__ = observed.__name__ = "ObserverProvider.observed"
        self.decorate(observed, provides=CalloutPipeline)

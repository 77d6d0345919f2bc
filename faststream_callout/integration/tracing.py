"""OpenTelemetry: the decision, as attributes of the span FastStream opens per request.

Spans come from FastStream's own middleware on the broker; this module adds
what was decided to the current span. Nothing here creates spans, and
``opentelemetry`` is imported only when :class:`DecisionSpanAttributes` is built::

    from faststream.nats.opentelemetry import NatsTelemetryMiddleware

    broker = NatsBroker(url, middlewares=[NatsTelemetryMiddleware(tracer_provider=provider)])
    pipeline.observers.append(DecisionSpanAttributes())   # or ObserverProvider(...)

Attributes (never a password, token, JWT, nkey signature or seed):

==============================  ===================================================
``callout.outcome``             allowed, denied, error, timeout, throttled, rejected,
                                dropped, signer_failed
``callout.reason``              the denial reason sent to nats-server (empty when allowed)
``callout.user``                the identity's name, else the user name the client gave
``callout.account``             where an allowed client was placed
``callout.client.host``         the client's address
``callout.client.kind``         ``Client``, ``Leafnode`` ...
``callout.client.type``         ``nats``, ``websocket``, ``mqtt`` ...
``callout.server``              the public key of the server that asked
``callout.latency_ms``          time from receipt to reply
==============================  ===================================================

A failed decision (outcome ``error`` or ``signer_failed``) also sets the span
status to ERROR; a denial is a normal answer and leaves the status alone.
"""

from __future__ import annotations

from typing import Any, Final

from faststream_callout.core.pipeline import Decision, Outcome

__all__ = ["ATTRIBUTE_PREFIX", "DecisionSpanAttributes", "decision_attributes"]

ATTRIBUTE_PREFIX: Final = "callout."


def decision_attributes(decision: Decision, prefix: str = ATTRIBUTE_PREFIX) -> dict[str, Any]:
    """The span attributes describing ``decision``: names and outcomes, never credentials."""
    request = decision.request
    attributes: dict[str, Any] = {
        f"{prefix}outcome": decision.outcome.value,
        f"{prefix}latency_ms": round(decision.latency * 1000, 3),
    }
    if decision.reason:
        attributes[f"{prefix}reason"] = decision.reason
    if decision.account:
        attributes[f"{prefix}account"] = decision.account
    user = decision.identity.name if decision.identity is not None else ""
    if request is not None:
        info = request.client_info
        token = request.connect_opts.auth_token
        # nats-server before 2.10.28/2.11.2 reported a token as the user name.
        user = user or ("" if token and info.user == token else info.user)
        attributes[f"{prefix}client.host"] = info.host
        attributes[f"{prefix}client.kind"] = info.kind
        attributes[f"{prefix}client.type"] = info.type
        attributes[f"{prefix}server"] = request.server_id.id
    if user:
        attributes[f"{prefix}user"] = user
    return attributes


class DecisionSpanAttributes:
    """A pipeline observer that writes each decision onto the current span.

    The current span is FastStream's ``$SYS.REQ.USER.AUTH process`` span when the
    broker has ``NatsTelemetryMiddleware``; without a recording span it does nothing.

    Args:
        prefix: the attribute name prefix.

    Raises:
        ImportError: ``opentelemetry-api`` is not installed.

    """

    __slots__ = ("_prefix", "_status_error", "_trace")

    def __init__(self, *, prefix: str = ATTRIBUTE_PREFIX) -> None:
        try:
            from opentelemetry import trace  # noqa: PLC0415 - optional, imported on use
        except ImportError as exc:
            raise ImportError(
                "DecisionSpanAttributes needs opentelemetry-api: "
                "pip install opentelemetry-sdk (or 'faststream[otel]')"
            ) from exc
        self._trace = trace
        self._prefix = prefix
        self._status_error = trace.Status(trace.StatusCode.ERROR, "authorization service error")

    def __call__(self, decision: Decision) -> None:
        """Set the decision's attributes on the current span, if it records."""
        span = self._trace.get_current_span()
        if not span.is_recording():
            return
        span.set_attributes(decision_attributes(decision, self._prefix))
        if decision.outcome in (Outcome.ERROR, Outcome.SIGNER_FAILED):
            span.set_status(self._status_error)

    def __repr__(self) -> str:
        return f"DecisionSpanAttributes(prefix={self._prefix!r})"

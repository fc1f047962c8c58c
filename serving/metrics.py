"""Prometheus metrics of the service, on a registry of its own (one per app instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "emoreg_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "emoreg_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_batches = Histogram(
            "emoreg_model_call_seconds",
            "latency of one /invocations call (one micro-batch)",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "emoreg_model_batch_size",
            "messages per /invocations call",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.emotions = Counter("emoreg_emotions", "emotions answered", ["label"], registry=r)
        self.strategies = Counter(
            "emoreg_strategies", "strategies chosen", ["strategy"], registry=r
        )
        self.escalations = Counter("emoreg_escalations", "answers that escalate", registry=r)
        self.degraded = Counter(
            "emoreg_degraded_answers", "answers from the local fallback", ["reason"], registry=r
        )
        self.reply_fallbacks = Counter(
            "emoreg_llm_fallbacks", "LLM replies replaced by a template", ["reason"], registry=r
        )
        self.feedback = Counter("emoreg_feedback", "feedback stored", ["source"], registry=r)
        self.live_model = Gauge(
            "emoreg_live_model_info",
            "1 for the model version the live routing file names",
            ["version"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "emoreg_circuit_open", "1 while the model endpoint's circuit is open", registry=r
        )

    def observe_batch(self, size: int, seconds: float, ok: bool) -> None:
        self.batch_size.observe(size)
        self.model_batches.labels("ok" if ok else "failed").observe(seconds)

    def set_live_version(self, version: str | None) -> None:
        self.live_model.clear()
        if version is not None:
            self.live_model.labels(version).set(1)

"""Prometheus metrics of one server, in a registry of its own so that apps never share counters."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Request latency buckets in seconds: sub-millisecond responses of small models up to the
# default 30 s request timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServeMetrics:
    """The counters, histograms and gauges that GET /metrics exposes."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "imgclf_requests", "HTTP responses sent, by route, method and status code.",
            ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram(
            "imgclf_request_latency_seconds", "Time from receiving a request to sending the last byte of its response.",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram(
            "imgclf_batch_size", "Images per model call.", buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.inference = Histogram(
            "imgclf_inference_seconds", "Duration of one model call on a batch.",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.images = Counter(
            "imgclf_images", "Images predicted, and images rejected by reason.",
            ["outcome"], registry=self.registry)
        self.model_load = Gauge(
            "imgclf_model_load_seconds", "Seconds spent loading the model at start-up.", registry=self.registry)
        self.model_warmup = Gauge(
            "imgclf_model_warmup_seconds", "Seconds spent on the warm-up calls after loading.", registry=self.registry)
        self.in_flight = Gauge(
            "imgclf_predict_requests_in_flight", "Predict requests admitted and not yet responded to.",
            registry=self.registry)
        self.rejected_busy = Counter(
            "imgclf_rejected_busy", "Predict requests rejected with 503 because max_queue_size were in flight.",
            registry=self.registry)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

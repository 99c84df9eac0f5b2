"""What operators use: metrics, Prometheus, alerts, the worker registry, the HTTP API and
dashboard."""

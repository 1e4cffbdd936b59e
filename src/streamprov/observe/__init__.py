"""Observability: Prometheus metrics, OpenTelemetry traces of chains, HTML reports."""

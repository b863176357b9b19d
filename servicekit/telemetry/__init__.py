"""Observability of a running service: OpenTelemetry traces and metrics, status, and micro registration."""

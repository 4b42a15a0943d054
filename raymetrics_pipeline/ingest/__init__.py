"""Ingest: find Ray's metrics endpoints, scrape them, turn Prometheus text into OTLP metrics, and
hand each cycle's metrics to a sink. Knows no backend."""

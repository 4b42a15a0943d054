"""Reading OTLP request bodies back into ``opentelemetry-proto`` messages, for assertions."""

from google.protobuf import json_format
from opentelemetry.proto.metrics.v1 import metrics_pb2


def decode_json(bodies: list[bytes]) -> metrics_pb2.MetricsData:
    """Several OTLP/JSON bodies merged into one message, decoded by protobuf's own json_format."""
    merged = metrics_pb2.MetricsData()
    for body in bodies:
        merged.MergeFrom(json_format.Parse(body, metrics_pb2.MetricsData()))
    return merged


def decode_protobuf(bodies: list[bytes]) -> metrics_pb2.MetricsData:
    merged = metrics_pb2.MetricsData()
    for body in bodies:
        merged.MergeFrom(metrics_pb2.MetricsData.FromString(body))
    return merged


def point_count(data: metrics_pb2.MetricsData) -> int:
    return sum(
        len(getattr(metric, metric.WhichOneof("data")).data_points)
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    )

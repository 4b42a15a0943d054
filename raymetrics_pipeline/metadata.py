"""Run and materialization metadata built from the core's result dataclasses, not copied field by field."""

import dataclasses
from datetime import datetime

import dagster as dg


def metadata_from(*results: object) -> dict[str, object]:
    """Every field of ``results`` as metadata: nested results flattened, floats rounded, times as text,
    lists as JSON."""
    metadata: dict[str, object] = {}
    for result in results:
        for field in dataclasses.fields(result):
            value = getattr(result, field.name)
            if dataclasses.is_dataclass(value):
                metadata.update(metadata_from(value))
            elif isinstance(value, datetime):
                metadata[field.name] = value.isoformat(sep=" ")
            elif isinstance(value, float):
                metadata[field.name] = round(value, 3)
            elif isinstance(value, list | tuple | dict):
                metadata[field.name] = dg.MetadataValue.json(list(value) if isinstance(value, tuple) else value)
            else:
                metadata[field.name] = value
    return metadata


def materialized(
    context: dg.AssetExecutionContext, metadata: dict[str, object], asset_key: str | None = None
) -> dg.MaterializeResult:
    """A materialization with ``metadata`` stored once: given to ``MaterializeResult``, Dagster also copies it into
    the step's output event, doubling what every rollups and reports run stores."""
    context.add_asset_metadata(metadata, asset_key=asset_key)
    return dg.MaterializeResult(asset_key=asset_key)

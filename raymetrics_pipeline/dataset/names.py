"""Names both backends share, as Parseable defines them (docs/parseable.md)."""

# The column Parseable stamps with the time it received a row; its query window is on this column.
RECEIVED_AT = "p_timestamp"
# Parseable's name for a series on every row: a hash of the metric name and every label and resource attribute
# (docs/parseable.md#rows). This name on HEAD (and in the local store); the older one in v2.8.0-v2.9.5.
SERIES_HASH = "__series_hash_u64"
OLDER_SERIES_HASH = "__series_hash"
# The dataset format our requests declare (the X-P-Log-Source header), kept in the p_format column.
LOG_SOURCE = "otel-metrics"

# Parseable's own rule for dataset names (src/validator.rs::stream_name).
_SQL_KEYWORDS = {"select", "from", "where", "group", "by", "order", "limit", "offset", "join", "and", "sql"}


def validate_dataset_name(name: str) -> str:
    """``name`` if Parseable would accept it as a dataset (and we can quote it in SQL), else a clear error.
    ASCII only: Parseable would take any Unicode letter, but the name travels in an HTTP header."""
    valid = all(char.isascii() and (char.isalnum() or char in "-_") for char in name)
    if not name or not valid or name.lower() in _SQL_KEYWORDS:
        raise ValueError(
            f"PARSEABLE_STREAM={name!r} is not a valid Parseable dataset name: use ASCII letters, digits, '-' "
            "and '_' only, and not an SQL keyword (for example raymetrics)"
        )
    return name

"""The local store's rows as Arrow: typed tables, the cycle and compacted files read as one dataset.

Only readers and compaction import this (PyArrow); the scrape process writes rows without it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from raymetrics_pipeline.localstore.rows import COLUMN_TYPES
from raymetrics_pipeline.localstore.store import read_rows

_ARROW_TYPES = {
    "string": pa.string(),
    "float64": pa.float64(),
    "uint64": pa.uint64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("ms"),
    "list<int64>": pa.list_(pa.int64()),
    "list<float64>": pa.list_(pa.float64()),
}


def rows_table(rows: list[dict]) -> pa.Table:
    """``rows`` (``localstore.rows``) typed as Parseable stores them, columns sorted by name."""
    names = set().union(*rows)
    schema = pa.schema(sorted((name, _ARROW_TYPES[COLUMN_TYPES.get(name, "string")]) for name in names))
    return pa.Table.from_pylist(rows, schema=schema)


def write_parquet(table: pa.Table, handle) -> None:
    pq.write_table(table, handle, compression="zstd")


def _is_parquet(path: Path) -> bool:
    return path.suffix == ".parquet"


# What a reader keeps of each file across queries, as a store file never changes once it has its name: a Parquet
# file's schema (its footer), a cycle file's rows as a table (a gzipped JSON file is parsed once, not per query).
ReadCache = dict[Path, pa.Schema | pa.Table]


def _known(path: Path, cache: ReadCache) -> pa.Schema | pa.Table:
    if path not in cache:
        cache[path] = pq.read_schema(path) if _is_parquet(path) else rows_table(read_rows(path))
    return cache[path]


def unified_schema(files: list[Path], cache: ReadCache | None = None) -> pa.Schema:
    """All files' columns: a Ray label first seen in a later cycle adds a column, as in Parseable."""
    cache = {} if cache is None else cache
    schemas = [known if isinstance(known, pa.Schema) else known.schema for known in (_known(p, cache) for p in files)]
    merged = pa.unify_schemas(schemas)
    return pa.schema(sorted(merged, key=lambda field: field.name))


def _conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with every column of ``schema``, nulls where it has none."""
    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(len(table), field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def files_dataset(files: list[Path], cache: ReadCache | None = None) -> ds.Dataset:
    """The files (at least one) as one dataset under their unified schema (a file lacking a column reads it as
    null): Parquet read lazily, the cycle files not yet compacted (the last minutes) from memory."""
    cache = {} if cache is None else cache
    schema = unified_schema(files, cache)
    parquet = [str(path) for path in files if _is_parquet(path)]
    parts = [ds.dataset(parquet, schema=schema, format="parquet")] if parquet else []
    cycles = [_conformed(_known(path, cache), schema) for path in files if not _is_parquet(path)]
    if cycles:
        parts.append(ds.InMemoryDataset(pa.concat_tables(cycles)))
    return parts[0] if len(parts) == 1 else ds.dataset(parts, schema=schema)

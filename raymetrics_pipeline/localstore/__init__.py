"""The embedded local store, the default without Parseable: the rows Parseable would keep, as
Parquet files on disk, with their sink, their SQL (DataFusion) and their upkeep."""

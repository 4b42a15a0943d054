"""The embedded local store, the default without Parseable: the rows Parseable would keep, as
files on disk (a gzipped JSON file a scrape cycle, each hour compacted to Parquet), with their
sink, their SQL (DataFusion) and their upkeep."""

"""Rollups: minute tables and summaries declared once (``tables``), pulled through the query layer
(``pull``), kept in DuckDB (``database``), and Ray runs compared side by side (``comparison``)."""

"""Parseable: the connection, OTLP bodies on the wire, the send loop and its status policy, the
disk spool for what could not be delivered yet, the sink a scrape cycle uses, and SQL."""

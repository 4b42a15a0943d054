"""Small pieces every core wing uses: atomic file writes, Markdown tables, bounded caches kept across cycles, the
pipeline's name on the wire."""

# Sent as the User-Agent of every request (scrapes and Parseable), so server logs can tell our traffic apart.
USER_AGENT = "raymetrics-pipeline"

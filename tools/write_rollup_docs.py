"""Write docs/rollup-tables.md (or the path given) from the rollup declarations.

Run after changing ``raymetrics_pipeline/rollups/tables.py``; a test fails until the page matches.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from raymetrics_pipeline.rollups.tables import reference  # noqa: E402

if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "rollup-tables.md"
    target.write_text(reference())
    print(f"wrote {target}")

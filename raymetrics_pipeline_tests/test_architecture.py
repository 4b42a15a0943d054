"""The layout holds: core wings (sub-packages) import no Dagster and no shell module; the shell is the top level."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "raymetrics_pipeline"
WINGS = sorted(path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file())
SHELL = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")


def core_modules() -> list[str]:
    return [
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for wing in WINGS
        for path in sorted((PACKAGE / wing).rglob("*.py"))
    ]


def test_the_wings_are_the_ones_the_readme_names():
    assert WINGS == ["common", "dataset", "ingest", "localstore", "parseable", "rayapi", "rollups"]
    assert SHELL == ["assets", "checks", "definitions", "jobs", "metadata", "resources", "schedules", "sensors"]


def test_no_core_module_pulls_in_dagster_even_indirectly():
    modules = core_modules()
    probe = (
        f"import importlib, sys\nfor name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", f"core wings load Dagster: {loaded}"


def test_no_core_module_imports_the_dagster_shell():
    shell = {f"raymetrics_pipeline.{name}" for name in SHELL}
    offenders = []
    for wing in WINGS:
        for path in (PACKAGE / wing).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                offenders += [f"{path.relative_to(PACKAGE)} imports {name}" for name in names if name in shell]
    assert not offenders

"""docs/architecture.md names every module of the package, so its table stays true to the code."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "airflow_gradient"
MODULES = sorted(p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def _rows() -> list[str]:
    page = (ROOT / "docs" / "architecture.md").read_text()
    return [line for line in page.splitlines() if line.startswith("| `")]


@pytest.mark.parametrize("module", MODULES, ids=str)
def test_every_module_is_in_the_architecture_table(module: Path) -> None:
    # A row names a module by its path, or by its file name in the row of its folder.
    folder = module.parent.as_posix()
    named = any(
        f"`{module.as_posix()}`" in row
        or (f"`{module.name}`" in row and (folder == "." or row.startswith(f"| `{folder}/`")))
        for row in _rows()
    )
    assert named, f"docs/architecture.md's table does not name airflow_gradient/{module.as_posix()}: add it"

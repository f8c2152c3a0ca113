"""Write the request-parameter list of the operator pages from the one table of parameters.

The list between the markers below, on each page of ``docs/operators/`` that holds them, is made
by :func:`airflow_gradient.models.parameters.markdown_table`; ``tests/models/test_parameters.py``
fails when a page and the table disagree. After changing the table:

    python scripts/request_parameters_doc.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from airflow_gradient.models.parameters import markdown_table

PAGES = Path(__file__).resolve().parents[1] / "docs" / "operators"
BEGIN = "<!-- request-parameters: written by scripts/request_parameters_doc.py from models/parameters.py -->\n"
END = "<!-- /request-parameters -->\n"


def render(page: str) -> str:
    """``page`` with the list between the markers written anew (unchanged when it has none)."""
    if BEGIN not in page:
        return page
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}{markdown_table()}{END}{tail}"


def main() -> int:
    for path in sorted(PAGES.glob("*.md")):
        text = path.read_text()
        if (new := render(text)) != text:
            path.write_text(new)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

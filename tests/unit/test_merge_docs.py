"""docs/reference.md §8 lists exactly the merge methods of lune.merge.methods.METHODS, with their formulas."""
from __future__ import annotations

from pathlib import Path

from comfyui_lune.lune.merge.methods import docs_table

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def test_methods_table_in_reference_is_generated_from_the_table():
    text = REFERENCE.read_text(encoding="utf-8")
    block = text.split("<!-- methods table: lune.merge.methods.docs_table() -->\n", 1)[1].split(
        "\n<!-- end methods table -->", 1)[0]
    assert block == docs_table()

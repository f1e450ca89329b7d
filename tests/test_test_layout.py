"""The test folders have no ``__init__.py``: pytest imports every module of
them by its bare name, so two files of one name in two folders would shadow
each other (the second import finds the first module)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_every_module_under_tests_has_a_name_of_its_own() -> None:
    names = Counter(
        path.name
        for path in TESTS.rglob("*.py")
        if "__pycache__" not in path.parts and path.name not in {"conftest.py", "__init__.py"}
    )
    assert [name for name, count in names.items() if count > 1] == []

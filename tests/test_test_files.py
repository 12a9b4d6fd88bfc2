"""pytest's default import mode imports test files by basename (tests/ has no __init__.py files): two test files
of one name in different folders fail collection, and with it the whole CI pass."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_test_file_names_are_unique():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, count in names.items() if count > 1], "rename one of each pair: " + ", ".join(
        str(p.relative_to(TESTS)) for p in TESTS.rglob("test_*.py") if names[p.name] > 1
    )

"""docs/api is generated from the docstrings (scripts/gen_api_docs.py): it must match them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api_docs", ROOT / "scripts/gen_api_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_docs_are_up_to_date(tmp_path: Path) -> None:
    gen = load_generator()
    assert gen.main([str(tmp_path)]) == 0
    committed = ROOT / "docs" / "api"
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.md")}
    stored = {p.name: p.read_text() for p in committed.glob("*.md")}
    stale = sorted(
        name for name in fresh.keys() | stored.keys() if fresh.get(name) != stored.get(name)
    )
    assert not stale, f"docs/api is out of date ({stale}): run python scripts/gen_api_docs.py"

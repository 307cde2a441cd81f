"""Every runnable example, as a user runs it, against the session's DTM server: the success
path and the `--fail` (rollback) path, checked by exit code and printed outcome."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import DtmServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = ["saga", "saga_async", "saga_grpc", "tcc", "msg", "workflow", "xa"]

SUCCEEDED = ("status: succeed", "balances: {1: 70, 2: 130}")
ROLLED_BACK = ("status: failed", "balances: {1: 100, 2: 100}")


def run_example(name: str, dtm: DtmServer, *flags: str) -> str:
    address = dtm.grpc_target if name.endswith("_grpc") else dtm.api
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--dtm", address, *flags],
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_every_example_is_tested() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_success(name: str, dtm: DtmServer) -> None:
    out = run_example(name, dtm).splitlines()
    assert out[-2:] == list(SUCCEEDED)


@pytest.mark.parametrize("name", NAMES)
def test_fail_rolls_back(name: str, dtm: DtmServer) -> None:
    out = run_example(name, dtm, "--fail").splitlines()
    assert out[-2:] == list(ROLLED_BACK)


GUIDES = Path(__file__).resolve().parents[2] / "docs" / "guide"
SNIPPET = re.compile(r"```python\n# from examples/([\w/]+)\.py\n(.*?)```", re.DOTALL)


def test_guide_snippets_are_taken_from_the_examples() -> None:
    """A guide's snippet marked `# from examples/x.py` must be lines of that example, in
    order (indentation aside), so the guides cannot show code that no longer runs."""
    found = 0
    for guide in sorted(GUIDES.glob("*.md")):
        for name, snippet in SNIPPET.findall(guide.read_text()):
            source = [line.strip() for line in (EXAMPLES / f"{name}.py").read_text().splitlines()]
            wanted = [line.strip() for line in snippet.splitlines() if line.strip()]
            start = 0
            for line in wanted:
                assert line in source[start:], f"{guide.name}: not in examples/{name}.py: {line}"
                start = source.index(line, start) + 1
            found += 1
    assert found >= 8

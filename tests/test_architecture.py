"""The layer order of nafrestore/ (the import-linter contracts in pyproject.toml, README.md "Architecture")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_are_kept():
    """No module imports from a layer above its own, no two packages import each other, and the independent rooms
    stay apart; the contracts' written exceptions are the only ones (`make lint` and CI run the same check)."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-logo", "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout

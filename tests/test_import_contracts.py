"""Which code may import which: the contracts in pyproject.toml (``[tool.importlinter]``) hold.

``lint-imports`` runs here so that ``make test`` and CI fail when a contract breaks.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_in_envelopes_is_over_500_lines():
    """A module past this size is several modules (docs/architecture.md)."""
    too_long = {
        str(path.relative_to(ROOT)): count
        for path in (ROOT / "envelopes").rglob("*.py")
        if "migrations" not in path.parts and (count := len(path.read_text().splitlines())) > 500
    }
    assert too_long == {}

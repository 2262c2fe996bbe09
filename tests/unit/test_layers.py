"""The package's layers import downward only: the import-linter contract in pyproject.toml holds."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_layers_contract_is_kept() -> None:
    proc = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Layers import downward only KEPT" in proc.stdout


def test_no_module_imports_form_a_cycle() -> None:
    """Counting imports inside functions too: none exists to dodge a cycle, because there is no cycle."""
    import grimp

    graph = grimp.build_graph("deepobfuscator")
    cycles = [(a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
              if a != b and graph.chain_exists(importer=b, imported=a)]
    assert not cycles, f"import cycles through: {sorted(cycles)[:10]}"

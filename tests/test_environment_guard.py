"""The suite's guard against order dependence (tests/conftest.py): a test that leaves
``os.environ`` changed fails, so no later test runs with its setting by accident."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")


def test_a_test_that_leaves_the_environment_changed_fails_and_the_next_starts_clean(tmp_path):
    # Given the suite's guard, in a pytest run of its own (the guard is an autouse fixture)
    (tmp_path / "conftest.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('suite_conftest', {str(CONFTEST)!r})\n"
        "suite = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(suite)\n"
        "environment_left_as_found = suite.environment_left_as_found\n"
    )
    # When one test sets a variable and leaves it, one sets it through monkeypatch, and one
    # runs after them both
    (tmp_path / "test_leaks.py").write_text(
        "import os\n"
        "def test_1_leaks():\n"
        "    os.environ['WORKFLOW_GUARD_PROBE'] = 'leaked'\n"
        "def test_2_patches(monkeypatch):\n"
        "    monkeypatch.setenv('WORKFLOW_GUARD_PROBE', 'patched')\n"
        "def test_3_after():\n"
        "    assert 'WORKFLOW_GUARD_PROBE' not in os.environ\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:xdist", "-p", "no:cacheprovider", "-q",
         "-o", "addopts=", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    # Then the leak is an error naming the variable; the patch and the test after it pass
    assert "3 passed, 1 error" in result.stdout, result.stdout + result.stderr
    assert "ERROR at teardown of test_1_leaks" in result.stdout, result.stdout
    assert "WORKFLOW_GUARD_PROBE: None -> 'leaked'" in result.stdout, result.stdout

"""Huge pages for large CPU tensors (toonctl.allocator): set before torch, honoured, and effective."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from toonctl.allocator import THP_VARIABLE, huge_pages_available


def _python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != THP_VARIABLE}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True, timeout=120
    )
    return out.stdout.strip()


FAULTS_PER_ALLOCATION = """
import resource, sys
from toonctl.allocator import use_huge_pages_for_tensors
print(use_huge_pages_for_tensors())
import torch
counts = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 2**20)  # 64 MiB: 16384 small pages
    t.fill_(1.0)
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del t
print(min(counts))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not huge_pages_available(), reason="no huge pages")
def test_large_tensors_fault_in_huge_pages():
    applied, faults = _python(FAULTS_PER_ALLOCATION).splitlines()
    declined, default_faults = _python(FAULTS_PER_ALLOCATION, **{THP_VARIABLE: "0"}).splitlines()
    assert (applied, declined) == ("True", "False")
    assert int(default_faults) >= 16384  # one fault per 4 KiB page, every time
    assert int(faults) < 16384 // 8


def test_a_user_setting_wins_and_torch_already_imported_is_reported():
    code = "from toonctl.allocator import use_huge_pages_for_tensors as f; import os; "
    code += "print(f(), os.environ.get('{v}'))"
    assert _python(code.format(v=THP_VARIABLE), **{THP_VARIABLE: "0"}) == "False 0"
    late = "import torch; " + code.format(v=THP_VARIABLE)
    assert _python(late) == "False None"


def test_the_cli_entry_point_sets_it_before_torch():
    code = (
        "import os, sys; sys.argv = ['toonctl', '--version']\n"
        "from toonctl.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(os.environ.get('{THP_VARIABLE}'), 'torch' in sys.modules)"
    )
    expected = "1" if huge_pages_available() else "None"
    assert _python(code).splitlines()[-1] == f"{expected} False"

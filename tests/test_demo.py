"""`make demo` runs non-interactively, ends with a verified destination and leaves no server running."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT
from tests.services.process import port_open


def test_make_demo_twice() -> None:
    for _ in range(2):  # it must work when run twice in a row
        result = subprocess.run(["make", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "demo: verified destination complete" in result.stdout
        assert "orphans copied: 0" in result.stdout
        match = re.search(r"demo: stopped 3 servers \(ports ([\d ]+)\)", result.stdout)
        assert match, result.stdout[-2000:]
        for port in map(int, match.group(1).split()):
            assert not port_open(port), f"a demo server still listens on {port}"

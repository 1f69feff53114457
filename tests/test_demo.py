"""`make demo` runs non-interactively, ends with a verified destination and leaves no server running."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT
from tests.services.process import port_open


def test_make_demo_twice() -> None:
    # Twice in a row must work; the second time from Mastodon's local storage (make demo-disk).
    for target, servers in (("demo", 3), ("demo-disk", 2)):
        result = subprocess.run(["make", target], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "demo: verified destination complete" in result.stdout
        assert "orphans copied: 0" in result.stdout
        match = re.search(rf"demo: stopped {servers} servers \(ports ([\d ]+)\)", result.stdout)
        assert match, result.stdout[-2000:]
        for port in map(int, match.group(1).split()):
            assert not port_open(port), f"a demo server still listens on {port}"

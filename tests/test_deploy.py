"""The deployment recipes in deploy/: valid, and running the shards they say they run."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


def test_kubernetes_job_is_valid_against_the_schema() -> None:
    """Validated offline against the Kubernetes schema (kubernetes-validate ships it), strictly."""
    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict",
                             str(DEPLOY / "kubernetes" / "job.yaml")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_kubernetes_job_runs_one_shard_per_index() -> None:
    import yaml

    job = yaml.safe_load((DEPLOY / "kubernetes" / "job.yaml").read_text())
    spec = job["spec"]
    container = spec["template"]["spec"]["containers"][0]
    shard = container["args"][container["args"].index("--shard") + 1]
    assert spec["completionMode"] == "Indexed"
    assert shard == f"auto/{spec['completions']}" and spec["parallelism"] == spec["completions"]


def test_systemd_unit_runs_shard_i() -> None:
    unit = (DEPLOY / "systemd" / "mastosync@.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert "--shard %i/4" in exec_start and "run --all" in exec_start
    assert "KillSignal=SIGTERM" in unit and "SuccessExitStatus=143" in unit

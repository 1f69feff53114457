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


def test_systemd_unit_writes_only_where_it_may() -> None:
    """ProtectSystem=strict leaves the unit StateDirectory= and LogsDirectory= to write: the state
    directory the configuration resolves to under the unit's environment, and the --log-file,
    are there, whatever sync.state_dir the configuration says (the sample's is relative)."""
    from mastosync import config

    unit = (DEPLOY / "systemd" / "mastosync@.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["ProtectSystem"] == "strict"
    writable = [f"/var/lib/{settings['StateDirectory']}", f"/var/log/{settings['LogsDirectory']}",
                *settings.get("ReadWritePaths", "").split()]
    environment = dict(line.removeprefix("Environment=").split("=", 1) for line in unit.splitlines()
                       if line.startswith("Environment="))
    environment = {k: v.replace("%S", "/var/lib") for k, v in environment.items()}
    loaded = config.load(ROOT / "config.sample.toml", environ=environment)
    assert any(loaded.sync.state_dir == w or loaded.sync.state_dir.startswith(w + "/") for w in writable), \
        loaded.sync.state_dir
    log_file = settings["ExecStart"].split("--log-file ", 1)[1].split()[0]
    assert any(log_file.startswith(w + "/") for w in writable), log_file
    # Settings mistakes and defects are not restarted in a loop.
    assert {"2", "70"} <= set(settings["RestartPreventExitStatus"].split())


def test_kubernetes_pods_expose_their_metrics() -> None:
    import yaml

    job = yaml.safe_load((DEPLOY / "kubernetes" / "job.yaml").read_text())
    template = job["spec"]["template"]
    container = template["spec"]["containers"][0]
    addr = container["args"][container["args"].index("--metrics") + 1]
    port = int(addr.rpartition(":")[2])
    assert {"name": "metrics", "containerPort": port} in container["ports"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == str(port)


def test_grafana_dashboard_asks_for_metrics_mastosync_serves() -> None:
    """Every metric a panel queries is one the run serves (names from the collector's source)."""
    import json
    import re

    dashboard = json.loads((DEPLOY / "grafana" / "mastosync.json").read_text())
    source = (ROOT / "mastosync" / "display" / "metrics.py").read_text()
    served = set(re.findall(r'"(mastosync_[a-z_]+)"', source))
    served |= {f"{name}_total" for name in served} | {f"{name}_info" for name in served} | {
        "process_resident_memory_bytes"}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\b((?:mastosync|process)_[a-z_]+)", target["expr"]):
                assert name in served, (panel["title"], name)

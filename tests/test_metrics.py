"""--metrics: Prometheus metrics scraped during a real run only grow, and at the end equal the
summary; they stay up sync.metrics_linger after it, and a Ctrl-C then ends the wait, not the run."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MastodonDb, new_bucket, write_config
from tests.reliability.helpers import start_run
from tests.services.faultproxy import FaultProxy
from tests.services.process import free_port
from tests.services.s3 import S3Server
from tests.test_cutover_flow import seed_media


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_during_and_at_the_end_of_a_run(tmp_path: Path, mastodon_db: MastodonDb,
                                                      moto: S3Server) -> None:
    src, dst = new_bucket(moto, "src"), new_bucket(moto, "dst")
    await seed_media(mastodon_db, moto, src, range(1, 61))
    proxy = FaultProxy(moto.port).start()
    proxy.set_faults(latency=0.05, slowdown=0.05, only_ops=("PutObject",))  # a few seconds, a few retries
    port = free_port()
    log = tmp_path / "events.jsonl"
    try:
        config = write_config(tmp_path / "config.toml", db=mastodon_db, source=(moto, src), destination=(moto, dst),
                              destination_endpoint=proxy.endpoint,
                              extra={"sync": {"concurrency": 4, "metrics_linger": "60s"}})
        proc = start_run(config, "--metrics", f"127.0.0.1:{port}", "--log-file", str(log))
        scrapes = []
        deadline = time.monotonic() + 120
        while not (log.exists() and '"event": "summary"' in log.read_text()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            found = scrape(port)
            if found:
                scrapes.append(found)
            time.sleep(0.2)
        final = scrape(port)  # lingering: the end, as the summary has it
        proc.send_signal(signal.SIGINT)  # ends the linger
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err  # the run's own outcome
    finally:
        proxy.stop()
    assert final is not None and len(scrapes) >= 2, len(scrapes)
    counters = [k for k in final if k[0].endswith("_total")]
    for earlier, later in zip(scrapes, [*scrapes[1:], final], strict=True):
        for key in counters:
            assert earlier.get(key, 0) <= later.get(key, 0), key  # counters only grow
    summary = json.loads(log.read_text().splitlines()[-1])["types"]["media_attachments"]
    media = (("type", "media_attachments"),)
    for outcome in ("copied", "skipped", "missing", "failed"):
        assert final["mastosync_objects_total", (("outcome", outcome), *media)] == summary[outcome], outcome
    assert final["mastosync_bytes_total", media] == summary["bytes"]
    assert final["mastosync_objects_expected", media] == 120
    assert final["mastosync_throttled_total", (("side", "destination"),)] >= 1
    assert final["mastosync_retries_total", (("side", "destination"),)] >= final[
        "mastosync_throttled_total", (("side", "destination"),)]
    assert final["mastosync_in_flight", ()] == 0
    assert final["process_resident_memory_bytes", ()] > 0
    info = [k for k in final if k[0] == "mastosync_build_info"]
    assert info and dict(info[0][1])["mastodon"] == "4.6"
    assert "metrics at http://127.0.0.1" in out

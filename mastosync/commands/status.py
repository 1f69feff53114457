"""`mastosync status`: the migration as a whole, from every resume state under state_dir.

Each run (and each shard of a sharded run) keeps its own resume state; the shards of
one migration share the state directory, so reading them all tells how far the whole
migration has come, shard by shard, without touching the database or a bucket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mastosync.config.units import format_size
from mastosync.state.history import RunHistory


def read_states(state_dir: str) -> list[dict[str, Any]]:
    """Every readable resume state, with its path."""
    found = []
    for path in sorted(Path(state_dir).glob("resume-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        found.append({**data, "path": str(path.resolve())})
    return found


def report(state_dir: str) -> tuple[str, bool]:
    """(the text to print, whether every state is complete)."""
    states = read_states(state_dir)
    if not states:
        return f"no resume state in {Path(state_dir).resolve()}: no run has saved progress there yet\n", False
    lines: list[str] = []
    totals = dict.fromkeys(("copied", "skipped", "missing", "bytes"), 0)
    complete_all = True
    for state in states:
        identity = state.get("identity", {})
        shard = identity.get("shard")
        src, dst = identity.get("source", ["", "", ""]), identity.get("destination", ["", "", ""])
        title = f"{src[1]} -> {dst[1]}" + (f", shard {shard[0]}/{shard[1]}" if shard else "") + (
            f", since {identity['since']}" if identity.get("since") else "")
        types = state.get("types", {})
        complete = bool(types) and all(t.get("complete") for t in types.values())
        complete_all = complete_all and complete
        lines.append(f"{title}: {'complete' if complete else 'unfinished'} (saved {state.get('saved_at', '?')})")
        for name, entry in types.items():
            so_far = entry.get("so_far", {})
            for key in totals:
                totals[key] += int(so_far.get(key, 0))
            mark = "complete" if entry.get("complete") else f"done through id {entry.get('done_through')}"
            failed = len(entry.get("failed_ids", []))
            lines.append(f"  {name:<24} {mark}; copied {so_far.get('copied', 0)}, skipped "
                         f"{so_far.get('skipped', 0)}, missing {so_far.get('missing', 0)}"
                         + (f", {failed} records to retry" if failed else ""))
        if state.get("open_uploads"):
            lines.append(f"  {len(state['open_uploads'])} multipart uploads to abort on the next run")
    shards = {tuple(s["identity"]["shard"]) for s in states if s.get("identity", {}).get("shard")}
    counts = {n for _, n in shards}
    for n in sorted(counts):
        have = sorted(k for k, m in shards if m == n)
        missing = [k for k in range(1, n + 1) if k not in have]
        lines.append(f"shards of {n}: {len(have)} with saved progress"
                     + (f"; not started: {', '.join(map(str, missing))}" if missing else ""))
        complete_all = complete_all and not missing
    release = RunHistory(state_dir).mastodon()
    if release:
        lines.append(f"database: Mastodon {release} (as the latest run found it)")
    lines.append(f"whole migration: copied {totals['copied']}, skipped {totals['skipped']}, missing "
                 f"{totals['missing']}, {format_size(totals['bytes'])} moved; "
                 + ("every state complete" if complete_all else "unfinished"))
    return "\n".join(lines) + "\n", complete_all

"""The benchmarks' synthetic instance has Mastodon-shaped ids: a bench whose ids share their
low bits puts every record in one shard (`--shard K/N` and `--processes N` split on id mod
N) and measures one process where it claims N."""

from __future__ import annotations

import collections

from bench.compare import make_instance


def test_bench_ids_split_evenly_into_shards() -> None:
    rows, objects = make_instance(4000)
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids) == 2000 and ids == sorted(ids)
    assert all(10**17 <= i < 10**18 for i in ids)  # snowflake-sized: 18 digits, six partition groups
    for n in (2, 3, 4):
        shares = collections.Counter(i % n for i in ids)
        assert len(shares) == n and min(shares.values()) > len(ids) / n * 0.85, (n, shares)
    assert len(objects) == 4000

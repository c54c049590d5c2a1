"""ledger.jsonl, one line per LLM call (purpose, tokens, cost, latency, cache hit): read and
summed here, for the report, the chat's usage tool and the review budget alike."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path


def ledger_entries(path: Path) -> Iterator[dict]:
    """The ledger's entries, skipping the half-written last line of a run killed mid-write."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


def ledger_totals(path: Path, purposes: Callable[[str], bool] = lambda purpose: True) -> dict:
    """Paid calls (cache hits apart), their tokens and cost, over the entries whose purpose
    `purposes` accepts."""
    totals = {"calls": 0, "cache_hits": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0}
    for entry in ledger_entries(path):
        if not purposes(entry.get("purpose", "")):
            continue
        if entry.get("cache_hit"):
            totals["cache_hits"] += 1
            continue
        totals["calls"] += 1
        totals["tokens_in"] += int(entry.get("tokens_in") or 0)
        totals["tokens_out"] += int(entry.get("tokens_out") or 0)
        totals["cost_usd"] += float(entry.get("cost_usd") or 0.0)
    return totals


def calls_by_purpose(path: Path) -> dict[str, int]:
    """Paid calls per purpose (cache hits apart)."""
    return dict(Counter(e["purpose"] for e in ledger_entries(path) if not e.get("cache_hit")))


def tokens_per_second(path: Path) -> float | None:
    """The endpoint's measured answer speed over the paid calls so far (answer tokens over
    wall seconds, prompt reading included: what a caller waits); None before any."""
    paid = [e for e in ledger_entries(path) if not e.get("cache_hit") and e.get("tokens_out")]
    seconds = sum(float(e.get("latency_s") or 0.0) for e in paid)
    if seconds <= 0:
        return None
    return sum(int(e["tokens_out"]) for e in paid) / seconds

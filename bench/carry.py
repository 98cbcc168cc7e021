"""Keep the other workloads' figures when `python -m bench --workloads X` refreshes a per-workload section.

A per-workload benchmark (its `data` has `workloads`) run for some workloads only would otherwise replace the
section with those workloads' rows alone. `carry_workloads` takes every table, table row, headline and note of the
previous record that belongs to a workload this run did not measure, and says in a note which run they come from.
An item belongs to the workloads whose labels its text names (a label inside a longer one, `changelogs (generated)`
in `debian-changelogs (generated)`, does not count); items naming none are the new run's alone.
"""

from __future__ import annotations

import re
from typing import Any

CARRIED = "from an earlier run"  # every carry note says this, so a later carry keeps the first origin


def carry_workloads(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """`new` with `old`'s figures for the workloads `new` did not measure (both are bench records)."""
    if not _comparable(new, old):
        return new
    assert old is not None
    measured = set(new["data"]["workloads"])
    labels = measured | set(old["data"]["workloads"])
    carried = sorted(set(old["data"]["workloads"]) - measured)
    if not carried:
        return new

    def old_only(text: str) -> bool:
        named = _named(text, labels)
        return bool(named) and not named & measured

    out = {**new, "data": {**new["data"], "workloads": {**new["data"]["workloads"]}}}
    for label in carried:
        out["data"]["workloads"][label] = old["data"]["workloads"][label]
    out["tables"] = _merge_tables(new.get("tables", []), old.get("tables", []), old_only)
    titles = {h["metric"] for h in new.get("headlines", [])}
    out["headlines"] = new.get("headlines", []) + [
        h for h in old.get("headlines", []) if old_only(h["metric"]) and h["metric"] not in titles
    ]
    kept_notes = [n for n in old.get("notes", []) if old_only(n)]
    sourced = set().union(*(_named(n, labels) for n in kept_notes if CARRIED in n)) if kept_notes else set()
    fresh = [label for label in carried if label not in sourced]
    origin = [_origin_note(fresh, old)] if fresh else []
    out["notes"] = new.get("notes", []) + kept_notes + origin
    return out


def _comparable(new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """Both measured per workload, in the same mode: quick figures never stand beside full ones."""
    if not old or old.get("status") != "ok" or new.get("status") != "ok":
        return False
    if old.get("name") != new.get("name") or bool(old.get("quick")) != bool(new.get("quick")):
        return False
    return all(isinstance((r.get("data") or {}).get("workloads"), dict) for r in (new, old))


def _merge_tables(new: list[dict[str, Any]], old: list[dict[str, Any]], old_only: Any) -> list[dict[str, Any]]:
    """The new tables, a shared table (same title) with the old rows of unmeasured workloads added, and the old
    tables of unmeasured workloads after them."""
    by_title = {t["title"]: t for t in old}
    merged = []
    for table in new:
        before = by_title.get(table["title"])
        rows = [r for r in (before or {}).get("rows", []) if r and old_only(str(r[0]))]
        merged.append({**table, "rows": table["rows"] + rows} if rows else table)
    titles = {t["title"] for t in new}
    return merged + [t for t in old if t["title"] not in titles and old_only(t["title"])]


def _named(text: str, labels: set[str]) -> set[str]:
    """The labels `text` names, a label that only occurs inside a longer named one excluded."""
    spans = {label: [m.span() for m in re.finditer(re.escape(label), text)] for label in labels}
    found = {label for label, where in spans.items() if where}

    def inside_longer(label: str, span: tuple[int, int]) -> bool:
        return any(
            len(other) > len(label) and s[0] <= span[0] and span[1] <= s[1] for other in found for s in spans[other]
        )

    return {label for label in found if not all(inside_longer(label, span) for span in spans[label])}


def _origin_note(labels: list[str], old: dict[str, Any]) -> str:
    when = str(old.get("started_at", ""))[:16].replace("T", " ")
    cpu = (old.get("machine") or {}).get("cpu", "an unrecorded CPU")
    names = ", ".join(labels)
    return f"The {names} figures are {CARRIED}: `{old.get('command', '?')}`, started {when} UTC, {cpu}."

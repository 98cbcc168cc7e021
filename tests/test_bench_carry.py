"""bench.carry: a run of some workloads keeps the other workloads' figures of the run before."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.carry import carry_workloads

A, B, B_INSIDE = "debian-changelogs (generated)", "orders (bundled)", "changelogs (generated)"


def record(workloads: list[str], command: str, quick: bool = False, notes: list[str] | None = None) -> dict:
    return {
        "name": "engines",
        "status": "ok",
        "quick": quick,
        "command": command,
        "started_at": "2026-12-06T03:37:36.9+00:00",
        "machine": {"cpu": "AMD EPYC"},
        "data": {"workloads": {w: {"n": len(w)} for w in workloads}},
        "tables": [{"title": "Per workload", "columns": ["workload", "x"], "rows": [[w, command] for w in workloads]}]
        + [{"title": f"{w}: per field", "columns": ["f"], "rows": [[command]]} for w in workloads],
        "headlines": [{"metric": f"exact match, {w}", "value": 1} for w in workloads],
        "notes": [f"{w}: a note of {command}" for w in workloads] + ["Method: the same for all."] + (notes or []),
    }


def test_the_unmeasured_workloads_figures_are_carried_with_their_origin():
    old = record([A, B], "old run")
    new = carry_workloads(record([B], "new run"), old)
    assert set(new["data"]["workloads"]) == {A, B}
    assert [t["title"] for t in new["tables"]] == ["Per workload", f"{B}: per field", f"{A}: per field"]
    assert new["tables"][0]["rows"] == [[B, "new run"], [A, "old run"]]
    assert [h["metric"] for h in new["headlines"]] == [f"exact match, {B}", f"exact match, {A}"]
    assert new["notes"][:3] == [f"{B}: a note of new run", "Method: the same for all.", f"{A}: a note of old run"]
    assert new["notes"][3].startswith(f"The {A} figures are from an earlier run: `old run`, started 2026-12-06 03:37")


def test_a_label_inside_a_longer_one_is_not_its_workload():
    old = record([A, B_INSIDE], "old run")
    new = carry_workloads(record([B_INSIDE], "new run"), old)  # A's items name B_INSIDE only inside A
    assert f"{A}: per field" in [t["title"] for t in new["tables"]]
    assert new["data"]["workloads"][A] == {"n": len(A)}
    again = carry_workloads(record([A], "new run"), old)
    assert f"{B_INSIDE}: per field" in [t["title"] for t in again["tables"]]


def test_a_carried_note_keeps_the_first_origin():
    first = record([A, B], "first run")
    second = carry_workloads(record([B], "second run"), first)
    third = carry_workloads(record([B], "third run"), second)
    origins = [n for n in third["notes"] if "from an earlier run" in n]
    assert origins == [n for n in second["notes"] if "from an earlier run" in n]
    assert "`first run`" in origins[0]


def test_nothing_is_carried_across_modes_or_from_a_failed_run():
    new = record([B], "new run")
    assert carry_workloads(new, record([A, B], "quick run", quick=True)) is new
    assert carry_workloads(new, {**record([A, B], "old run"), "status": "not_run"}) is new
    assert carry_workloads(new, None) is new
    assert carry_workloads(new, record([B], "old run")) is new  # the same workloads: the new run replaces it

"""The programs benchmark runs end to end on a small generated workload: per field a program, its held-out and
unseen record, induction time, and the unseen calls through the cascade (structure and sane values, not speed)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` is a top-level package beside src/
    sys.path.insert(0, str(ROOT))

from bench import programs  # noqa: E402
from bench.common import Context  # noqa: E402


def test_programs_benchmark_measures_a_generated_workload(tmp_path, monkeypatch):
    monkeypatch.setattr(programs, "TRACES", 90)
    ctx = Context(quick=True, scratch=tmp_path / "scratch", cache_dir=tmp_path / "cache", log=lambda m: None)
    w = programs.generated("make_invites", "invites")
    w.heldout = w.heldout[:25]
    m = programs.measure(ctx, w)
    assert m["train"] + m["heldout_traces"] == 90 and m["calls"] == 25 and m["induce_s"] > 0
    count = m["fields"]["attendee_count"]
    assert count["promoted"] and count["unseen_wrong"] == 0 and count["unseen_right"] > 0
    assert m["program_share"] > 0 and m["quality"] == 1.0 and m["teacher_only_per_1k_usd"] > 0
    table = programs._field_table(w, m)
    assert table.rows and all(len(row) == len(table.columns) for row in table.rows)


def test_real_changelog_entries_are_read_as_dpkg_reads_them(tmp_path):
    import gzip
    import shutil

    sys.path.insert(0, str(ROOT / "bench" / "workloads"))
    import make_real_changelogs as real

    text = (
        "vim (2:9.1-2) unstable; urgency=Medium\n\n  [ Ana Lima ]\n  * Fix it (Closes: #909, #101)\n"
        "    - a sub-item, closes: #202\n  * Polish\n\n"
        " -- Émile Zoë <emile@debian.org>  Mon, 01 Jan 2024 12:00:00 +0000\n\n"
        "vim (2:9.1-1) unstable; urgency=low\n\n  * Initial release.\n\n"
        " -- Bo Chen <bo@debian.org>  Sun, 31 Dec 2023 10:00:00 +0000\n"
    )
    docs = tmp_path / "doc" / "vim"
    docs.mkdir(parents=True)
    with gzip.open(docs / "changelog.Debian.gz", "wt", encoding="utf-8") as f:
        f.write(text)
    entries = list(real.entries(str(docs / "changelog.Debian.gz")))
    assert len(entries) == 2 and entries[1].startswith("vim (2:9.1-1)") and entries[1].endswith("+0000")
    first = real.answer(entries[0])
    assert first == {
        "package": "vim",
        "version": "2:9.1-2",
        "distribution": "unstable",
        "urgency": "medium",
        "maintainer": "Émile Zoë",
        "email": "emile@debian.org",
        "closes": [909, 101, 202],
        "changes": 2,
    }
    if shutil.which("dpkg-parsechangelog"):  # the reference is the one dpkg reads, and a disagreement is caught
        assert real.agrees_with_dpkg(entries[0], first)
        assert not real.agrees_with_dpkg(entries[0], {**first, "closes": [909]})
    rows = real.generate(2, pattern=str(tmp_path / "doc" / "*" / "changelog.Debian.gz"))
    assert sorted(r["output"]["version"] for r in rows) == ["2:9.1-1", "2:9.1-2"]

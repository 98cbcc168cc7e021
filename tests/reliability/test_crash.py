"""SIGKILL at the worst moments: a paid answer is never lost, the store stays sound, and no half-written dataset,
export, skill folder or student is left looking complete; an interrupted training run resumes."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from protege import Protege
from protege.agents import FunctionModel
from protege.distill import export
from protege.distill.dataset import build_dataset
from protege.errors import UserError
from protege.skills import Skill, SkillLibrary
from protege.store import RunRow, Store, TraceRow
from protege.tasks import input_hash
from protege.testing import FakeProvider

from .common import GOOD, OPUS, answer_for, oracle, register_triage, run_script, start_script, wait_for

KEY = "sk-test-crash-1111"
WORDS = (
    "invoice refund crash login password card charge twice screen blank export report order late shipping "
    "address account locked email change plan upgrade cancel renewal tax receipt missing item broken app "
    "slow sync error timeout mobile desktop browser cookie session token reset phone verify code"
).split()


def seed_traces(store: Store, n: int, seed: int) -> None:
    """n valid teacher traces of distinct, varied inputs (so dedup keeps them all)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        inp = {"ticket": {"subject": " ".join(rng.choices(WORDS, k=12)) + f" #{seed}-{i}", "body": ""}}
        out = answer_for(inp)
        rows.append(
            {
                "task_name": "triage",
                "tier": "teacher",
                "model": OPUS,
                "input": inp,
                "input_hash": input_hash(inp),
                "output": out,
                "output_text": json.dumps(out),
                "valid": True,
            }
        )
    store.insert_traces(rows)


def killed(proc) -> None:
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]


@pytest.mark.parametrize("provider", ["anthropic", pytest.param("openai", marks=pytest.mark.soak)])
def test_killed_after_real_sdk_teacher_answered_keeps_the_paid_trace(tmp_path, provider):
    """A process whose teacher (the real SDK, over HTTP) answered is SIGKILLed once the answer is written, before
    the caller gets it: the answer is in the store with the provider's payload and usage, its run finished with
    it, and the store opens and serves afterwards."""
    url = f"sqlite:///{tmp_path}/crash.db"
    with FakeProvider(api_key=KEY, handler=lambda provider, body: GOOD) as fake:
        base = fake.anthropic_base_url if provider == "anthropic" else fake.openai_base_url
        killed(run_script("kill_at.py", "teacher", url, provider, base, env={"PROTEGE_TEST_KEY": KEY}))
    with Store(url) as store:
        (trace,) = store.traces("triage", limit=None)
        assert trace.valid and trace.tier == "teacher" and trace.output == GOOD and trace.model.startswith(provider)
        assert trace.input_tokens > 0 and trace.cost_usd > 0 and trace.raw[0]["id"].startswith(("msg_fake", "chatcmpl"))
        assert store.run(trace.run_id).status == "ok"  # trace and outcome are one transaction: never half of it
        assert KEY not in json.dumps(trace.raw)
    app = Protege(db=url, teacher=FunctionModel(oracle, price_as=OPUS), project_dir=tmp_path / ".p")
    register_triage(app)
    assert app.run("triage", {"ticket": {"subject": "refund"}}).output.queue == "billing"
    app.close()


def check_store_sound(db_file: Path) -> dict[str, int]:
    """SQLite says the file is intact; every finished run has exactly its valid trace; no trace lacks its run."""
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Store(f"sqlite:///{db_file}") as store, store.engine.connect() as conn:
        runs = {r.id: r.status for r in conn.execute(select(RunRow.id, RunRow.status))}
        traces = list(conn.execute(select(TraceRow.run_id, TraceRow.valid).where(TraceRow.run_id.is_not(None))))
    per_run: dict[str, int] = {}
    for t in traces:
        assert t.run_id in runs and t.valid
        per_run[t.run_id] = per_run.get(t.run_id, 0) + 1
    for run_id, status in runs.items():
        assert status in ("ok", "running"), status
        assert per_run.get(run_id, 0) == (1 if status == "ok" else per_run.get(run_id, 0)) <= 1
    return {"runs": len(runs), "ok": sum(s == "ok" for s in runs.values()), "traces": len(traces)}


def kill_during_calls(tmp_path: Path, db_file: Path, rounds: int, seed: int) -> list[dict[str, int]]:
    """Start a 4-thread caller, SIGKILL it at a random moment mid-traffic, check the store; `rounds` times."""
    rng = random.Random(seed)
    url = f"sqlite:///{db_file}"
    Store(url).close()
    seen = []
    for r in range(rounds):
        go, out = tmp_path / f"go{r}", tmp_path / f"out{r}.json"
        proc = start_script("calls.py", url, 100_000, 4, out, go, "--tag", f"k{r}")
        try:
            ready = Path(f"{out}.ready")
            wait_for(lambda ready=ready, proc=proc: ready.exists() or proc.poll() is not None, 120, "the caller")
            go.touch()
            time.sleep(rng.uniform(0.3, 1.2))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        seen.append(check_store_sound(db_file))
    assert seen[-1]["ok"] > 0
    return seen


def test_sigkill_at_random_moments_mid_traffic_leaves_a_sound_store(tmp_path):
    """A SIGKILL at a random moment of 4-thread traffic: the SQLite file passes integrity_check, every finished run
    has exactly its one valid trace, and at most a few runs are left unfinished."""
    (seen,) = kill_during_calls(tmp_path, tmp_path / "kill.db", rounds=1, seed=1)
    assert seen["runs"] - seen["ok"] <= 4, seen  # one call in flight per thread at most
    print(f"after 1 kill: {seen}")


@pytest.mark.soak
def test_soak_sigkill_twenty_times_mid_traffic(tmp_path):
    """Soak: twenty SIGKILLs at random moments of traffic on one SQLite file; it stays sound every time, each
    kill leaves at most one unfinished run per thread, and the next process carries on."""
    seen = kill_during_calls(tmp_path, tmp_path / "kill.db", rounds=20, seed=2)
    assert seen[-1]["runs"] - seen[-1]["ok"] <= 4 * 20 and seen[-1]["runs"] > seen[0]["runs"]
    print(f"after 20 kills: {seen[-1]}")


def test_killed_dataset_build_leaves_nothing_that_looks_complete(tmp_path):
    """build_dataset SIGKILLed mid-write: no dataset folder under its final name, no DatasetRow, the leftover
    temporary folder is hidden and refused as a dataset; a rebuild then succeeds."""
    url = f"sqlite:///{tmp_path}/ds.db"
    out = tmp_path / "datasets"
    with Store(url) as store:
        seed_traces(store, 200, seed=1)
    killed(run_script("kill_at.py", "dataset", url, out))
    leftovers = list((out / "triage").iterdir())
    assert leftovers and all(p.name.startswith(".") and p.name.endswith(".tmp") for p in leftovers)
    with pytest.raises(UserError, match="not a complete protege dataset"):
        export.load_manifest(leftovers[0])
    with Store(url) as store:
        assert store.datasets("triage") == []
        built = build_dataset(store, "triage", instructions="Route a support ticket.", out_dir=out)
        assert export.load_manifest(built.path)["counts"]["selected"] == 200


def two_datasets(tmp_path: Path):
    """Datasets A and B of the same task, B built after more traces came in (so every file differs)."""
    with Store(f"sqlite:///{tmp_path}/ex.db") as store:
        seed_traces(store, 100, seed=1)
        a = build_dataset(store, "triage", instructions="Route a support ticket.", out_dir=tmp_path / "ds")
        seed_traces(store, 100, seed=2)
        b = build_dataset(store, "triage", instructions="Route a support ticket.", out_dir=tmp_path / "ds")
    return a, b


def exported_pair_is_one_dataset(dest: Path, *datasets) -> bool:
    pair = ((dest / export.TRAIN_FILE).read_bytes(), (dest / export.EVAL_FILE).read_bytes())
    return any(
        pair == ((d.path / export.OPENAI_FILE).read_bytes(), (d.path / export.OPENAI_EVAL_FILE).read_bytes())
        for d in datasets
    )


@pytest.mark.parametrize("when", ["before", "after"])
def test_killed_export_never_mixes_two_datasets(tmp_path, when):
    """export_dataset of dataset B over an earlier export of A, SIGKILLed just before or just after its first
    file replacement: `dest` holds A's pair or B's pair, never one's train file beside the other's eval file."""
    a, b = two_datasets(tmp_path)
    dest = tmp_path / "export"
    export.export_dataset(a.row, dest)
    killed(run_script("kill_at.py", "export", b.path, dest, when))
    assert exported_pair_is_one_dataset(dest, a, b), "dest holds files of two different datasets"


@pytest.mark.parametrize("when", ["before", "after"])
def test_killed_export_into_an_existing_folder_never_mixes_two_datasets(tmp_path, when):
    """The same crash when `dest` is a folder the user made (not protege's symlink): still A's pair or B's, and the
    user's own files are still there (this mixed the pair when the files were replaced one by one)."""
    a, b = two_datasets(tmp_path)
    dest = tmp_path / "export"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    export.export_dataset(a.row, dest)
    killed(run_script("kill_at.py", "export", b.path, dest, when))
    assert exported_pair_is_one_dataset(dest, a, b), "dest holds files of two different datasets"
    assert exported_pair_is_one_dataset(dest, a if when == "before" else b)
    assert (dest / "notes.txt").read_text() == "mine" and not dest.is_symlink()


def test_killed_skill_export_keeps_the_previous_folder_whole(tmp_path):
    """export_skills SIGKILLed while writing v2's files over an exported v1: the folder is still v1, complete,
    and it imports cleanly; the half-written v2 is a hidden folder the importer ignores."""
    url = f"sqlite:///{tmp_path}/sk.db"
    dest = tmp_path / "skills"
    with Store(url) as store:
        lib = SkillLibrary(store)
        files = {"examples/a.md": "refund -> billing\n", "examples/b.md": "crash -> bug\n"}
        lib.add("triage", Skill(name="triage", description="Route tickets.", body="# v1\n", files=files))
        lib.approve("triage", by="ana")
        lib.export(dest)
        v1 = (dest / "triage" / "SKILL.md").read_text()
        lib.edit("triage", v1.replace("# v1", "# v2"), by="ana")
        lib.approve("triage", by="ana")
    killed(run_script("kill_at.py", "skills", url, dest))
    assert (dest / "triage" / "SKILL.md").read_text() == v1
    assert sorted(p.name for p in (dest / "triage" / "examples").iterdir()) == ["a.md", "b.md"]
    assert any(p.name.startswith(".triage.") for p in dest.iterdir())
    with Store(f"sqlite:///{tmp_path}/fresh.db") as fresh:
        (row,) = SkillLibrary(fresh).import_dir(dest, by="import")
        assert "# v1" in row.text and set(row.files) == set(files)


def test_training_killed_mid_run_resumes_from_its_checkpoint(tmp_path):
    """train_student SIGKILLed at step 5 (checkpoint of step 4 on disk, no adapter yet): the next run resumes at
    step 5 instead of step 1, finishes all 8 steps, and only then writes the adapter."""
    pytest.importorskip("trl")
    from protege.distill.train import ADAPTER_DIR, TrainConfig, read_metadata, train_student

    from .scripts.tiny_base import ROWS, TRAIN_CONFIG

    base, out, log = tmp_path / "base", tmp_path / "student", tmp_path / "steps.log"
    killed(run_script("train_kill.py", base, out, log, 5, "--build-and-train", timeout=300))
    assert log.read_text().split() == ["1", "2", "3", "4", "5"]
    assert not (out / ADAPTER_DIR).exists()
    steps: list[int] = []
    t0 = time.perf_counter()
    result = train_student(ROWS, base, out, TrainConfig(**TRAIN_CONFIG), progress=lambda p: steps.append(p.step))
    assert steps == [5, 6, 7, 8], steps  # resumed after checkpoint-4, not from scratch
    assert result.steps == 8 and read_metadata(out / ADAPTER_DIR)["metrics"]["steps"] == 8
    print(f"killed at step 5, resumed at step {steps[0]}, 8 steps, resume took {time.perf_counter() - t0:.1f} s")

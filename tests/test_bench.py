"""The benchmark harness works end to end on its cheapest benchmarks (small n): structure and sane values, not speed."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` is a top-level package beside src/, run as `python -m bench`
    sys.path.insert(0, str(ROOT))

from bench.__main__ import run_one  # noqa: E402
from bench.common import Context, latency_summary, percentile  # noqa: E402


@pytest.fixture
def ctx(tmp_path):
    return Context(quick=True, scratch=tmp_path / "scratch", cache_dir=tmp_path / "cache", log=lambda m: None)


def test_percentiles_interpolate_between_ranks():
    """p50 of an even-sized sample sits between the middle values; p99 near the top; ms conversion is right."""
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    s = latency_summary([0.001] * 99 + [0.101])
    assert s["n"] == 100 and s["p50_ms"] == pytest.approx(1.0) and 1.0 < s["p99_ms"] < 101


def test_bench_has_no_import_cycle():
    """No bench module imports, even lazily, one that leads back to it: shared pieces live in lower modules."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("bench", cache_dir=None)
    cycles = sorted(
        {
            tuple(sorted((module, imported)))
            for module in graph.modules
            for imported in graph.find_modules_directly_imported_by(module)
            if graph.chain_exists(importer=imported, imported=module)
        }
    )
    assert not cycles, f"import cycles in bench: {cycles}"


def test_overhead_measures_both_paths_against_their_baselines(ctx):
    """The overhead benchmark times protege and bare calls on both paths and writes traces to a real store."""
    from bench import overhead
    from bench.overhead_otel import MODES

    result = overhead.run(ctx, n=20, rounds=2, profile=False)
    for path in ("function", "sdk"):
        m = result.data[path]
        assert m["protege"]["n"] == m["bare"]["n"] > 0
        assert 0 < m["bare"]["p50_ms"] <= m["bare"]["p99_ms"] < 10_000
        assert 0 < m["protege"]["p50_ms"] <= m["protege"]["p99_ms"] < 10_000
    assert len(result.headlines) == 4 and all(h.unit == "ms" and h.baseline > 0 for h in result.headlines)
    tracing = result.data["tracing"]  # off, an SDK provider, the OTLP exporter: each timed on the same calls
    assert [tracing[mode]["n"] for mode in MODES] == [20, 20, 20]
    assert 0 < tracing["spans_only_us"]["off"] < tracing["spans_only_us"]["provider + no-op exporter"]
    dbs = list((ctx.scratch / "overhead").glob("*/protege.db"))
    assert len(dbs) == 5  # one app per path and per tracing mode, each on its own SQLite file


def test_overhead_profile_accounts_for_the_call(ctx):
    """The profiler's component rows add up to the measured app.run time, and cProfile finds the cascade's frames
    on the loop thread."""
    from bench import overhead
    from bench.overhead_profile import profile_calls
    from protege.agents import FunctionModel

    model = FunctionModel(lambda req: json.dumps(overhead.ANSWER))
    prof = profile_calls(ctx, overhead.make_app, model, 20)
    breakdown = prof["tables"][0].rows
    total = next(r for r in breakdown if r[0].startswith("= app.run"))[1]
    parts = sum(r[1] for r in breakdown if not r[0].startswith(("=", "background")))
    assert total > 0 and parts == pytest.approx(total, rel=0.02)
    packages = [r[0] for r in prof["tables"][1].rows]
    assert "protege" in packages


def test_store_ingest_sqlite_rates_are_positive_and_rows_land(ctx):
    """The ingest benchmark reports baseline, single and 4-process rates, and every trace is in the database."""
    from bench import store as bench_store
    from protege.store import Store

    result = bench_store.run(ctx, n=400, postgres=False)
    m = result.data["backends"]["SQLite (WAL)"]
    assert all(m[k] > 0 for k in ("raw_per_s", "single_per_s", "concurrent_per_s"))
    assert any("PostgreSQL not measured" in note for note in result.notes)
    counts = []
    for db in sorted((ctx.scratch / "store").glob("*.db")):
        with Store(f"sqlite:///{db}", migrate=False) as s:
            counts.append(s.count_traces())
    # each round: baseline, single writer, 4 writers x 100
    assert counts == [400] * 3 * bench_store.ROUNDS


@pytest.mark.postgres
def test_store_ingest_on_postgres_drops_its_scratch_databases(ctx):
    """On PostgreSQL the benchmark measures all three rates and leaves no scratch database behind."""
    from bench import store as bench_store

    admin, why = bench_store.pg_admin_url()
    if admin is None:
        pytest.skip(why)
    import psycopg

    result = bench_store.run(ctx, n=200, sqlite=False)
    assert result.data["backends"]["PostgreSQL"]["single_per_s"] > 0
    with psycopg.connect(admin) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'protege_bench_%'").fetchone()[0]
    assert left == 0


def test_runner_reports_a_missing_piece_as_not_run_and_renders_the_report(ctx, tmp_path, monkeypatch):
    """A benchmark that cannot import becomes a 'not run' record; the report renders it beside a real result."""
    from bench import overhead
    from bench import store as bench_store
    from bench.report import write_report

    small = bench_store.run
    monkeypatch.setattr(bench_store, "run", lambda c: small(c, n=200, postgres=False))

    missing = run_one("no_such_benchmark", ctx, "python -m bench --only no_such_benchmark")
    assert missing["status"] == "not_run" and "no_such_benchmark" in missing["reason"]
    ok = run_one("store", ctx, "python -m bench --only store")
    assert ok["status"] == "ok" and ok["headlines"]
    results = tmp_path / "results"
    results.mkdir()
    (results / "store.json").write_text(json.dumps(ok, default=str))
    fake = {**missing, "name": "inference", "title": overhead.TITLE}
    (results / "inference.json").write_text(json.dumps(fake, default=str))
    out = write_report(results, tmp_path / "BENCHMARKS.md")
    text = out.read_text()
    assert "Trace ingest rate" in text and "**Not run:**" in text and "no_such_benchmark" in text
    assert "python -m bench --only store" in text and "cores" in text
    assert (results / "benchmarks.png").stat().st_size > 1000
    assert "benchmarks.png" in text


def test_headline_ratio_is_value_over_baseline():
    """A headline's ratio divides its value by the same-run baseline (and is None without one)."""
    from bench.common import Headline

    assert Headline("x", 3.0, baseline=1.5).ratio == 2.0
    assert Headline("x", 3.0).ratio is None
    assert asdict(Headline("x", None, baseline=2.0))["value"] is None


def test_workloads_are_picked_by_name_and_reuse_needs_an_earlier_run(ctx, monkeypatch):
    """--workloads keeps the named workloads (quick mode included) and refuses a name that matches none;
    --reuse without an earlier run of the workload says so instead of training."""
    from dataclasses import replace

    from bench.common import NotRun
    from bench.data import workloads
    from bench.quality import prepare

    picked = workloads(replace(ctx, workloads=("orders",)))
    assert [w.name for w in picked] == ["orders (bundled)"] and len(picked[0].pool) == 200
    with pytest.raises(NotRun, match="matches none"):
        workloads(replace(ctx, workloads=("nope",)))
    monkeypatch.setenv("PROTEGE_CACHE_DIR", str(ctx.cache_dir))  # prepare() would set it for the whole process
    with pytest.raises(NotRun, match="no earlier run of orders"):
        prepare(replace(ctx, reuse=True), picked[0])


class Word(BaseModel):
    text: str


class Upper(BaseModel):
    value: str


def test_run_calls_scores_each_call_and_keeps_its_confidence(tmp_path):
    """The quality and stream benchmarks' caller: per-call scores against the labels, the serving tier, and each
    answer's gate confidence (what a gate would see); a call that fails counts as wrong with confidence 0."""
    from bench.quality import run_calls
    from protege import Protege
    from protege.agents import FunctionModel
    from protege.agents.models.base import ModelResponse

    def shout(req):
        text = req.task_input["word"]["text"]
        answer = "not json" if text == "bad" else json.dumps({"value": text.upper()})
        return ModelResponse(text=answer, confidence=0.8, field_confidences={"value": 0.3})

    app = Protege(db=f"sqlite:///{tmp_path}/app.db", teacher=FunctionModel(shout), project_dir=tmp_path / "p")
    try:

        @app.task
        def upper(word: Word) -> Upper:
            """Upper-case the word."""

        rows = [
            {"input": {"word": {"text": t}}, "output": {"value": v}}
            for t, v in (("a", "A"), ("b", "wrong"), ("bad", "BAD"))
        ]
        out = run_calls(app, "upper", rows, tier="teacher")
    finally:
        app.close()
    assert out["scores"] == [1.0, 0.0, 0.0] and out["invalid"] == pytest.approx(1 / 3)
    # the least-sure field's, as the gate compares (the answer's mean probability told a floor nothing)
    assert out["confidences"] == [0.3, 0.3, 0.0] and out["served"] == ["teacher", "teacher", "failed"]


def test_student_programs_reads_back_an_earlier_runs_calls_in_order():
    from types import SimpleNamespace

    from bench.student_programs import _read_back, _stored_runs
    from protege.tasks import input_hash

    rows = [{"input": {"n": i}} for i in range(3)]
    made = [*rows, *rows[:2]]  # the student-alone pass, then 2 of the 3 routed calls before the process stopped
    runs = [
        SimpleNamespace(input_hash=input_hash(r["input"]), status="ok", output={"n": i}, created_at=i)
        for i, r in enumerate(made)
    ]
    runs.insert(1, SimpleNamespace(input_hash="other", status="ok", output={}, created_at=0.5))  # not the stream's
    app = SimpleNamespace(store=SimpleNamespace(runs=lambda task, limit: list(reversed(runs))))
    back = _stored_runs(app, "t", rows)
    assert [r.created_at for r in back] == [0, 1, 2, 3, 4]

    from protege.agents.cascade import LOW_CONFIDENCE

    def attempts(run_id, **_):  # a gate's refusal leaves a valid answer; a cut one does not
        gated = SimpleNamespace(errors=[f"{LOW_CONFIDENCE}: field 'n' 0.5 < the floor 0.8"], output_text='{"n":9}')
        cut = SimpleNamespace(errors=["the answer was cut at the token limit"], output_text='{"n":')
        return {"gated": [gated], "cut": [cut]}.get(run_id, [])

    app.store.traces = attempts
    for run_id, expected in (("cut", (None, "invalid")), ("gated", ({"n": 9}, "student")), ("gone", (None, "invalid"))):
        failed = SimpleNamespace(id=run_id, status="failed", output=None, cost_usd=0.01, latency_s=2.0, tier="student")
        assert _read_back(app, failed) == (expected[0], 0.01, 2.0, expected[1], None)


def test_demotion_rules_demote_a_failing_tier_and_the_bound_spares_a_steady_one():
    from bench.demotion_rules import first_demotion, run_all

    failing = [0.0] * 10
    assert {r: first_demotion(failing, r) for r in ("mean", "bound", "sequential", "default")} == {
        "mean": 10,  # the window needs 10 shadows
        "bound": 10,
        "sequential": 4,  # four straight disagreements
        "default": 4,
    }
    steady = run_all(streams=40, shadows=100)["0.93"]  # above the bar 0.9: every demotion is a false alarm
    assert steady["mean"]["demoted"] > 0.5 > steady["bound"]["demoted"]


def test_the_lookahead_comparison_answers_twice_with_the_same_weights(tiny_base, tmp_path):
    """bench.lookahead on a (random) model: both runs answer every row, and the record lists what changed."""
    from bench.lookahead import main

    out = tmp_path / "la.json"
    assert main([str(tiny_base), "--eval", "2", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["runs"]) == {"without", "with"} and record["runs"]["without"]["choices_reconsidered"] == 0
    assert all(run["n"] == 2 for run in record["runs"].values())
    assert all(change["with"] != change["without"] for change in record["changed"])
    if record["runs"]["with"]["choices_reconsidered"] == 0:  # only a replaced choice can change an answer
        assert record["changed"] == []


def test_engines_alone_with_reuse_finds_a_student_programs_runs_student(ctx, monkeypatch):
    """`--only engines --reuse` measures the student an earlier `--only student_programs` run distilled (it used
    to look among quality runs only and train anew)."""
    import time
    from dataclasses import replace

    from bench.data import workloads
    from bench.inference import _student
    from bench.student_programs import _app, _slug
    from protege.store.models import StudentRow

    monkeypatch.setenv("PROTEGE_CACHE_DIR", str(ctx.cache_dir))
    reusing = replace(ctx, workloads=("orders",), reuse=True)
    w = workloads(reusing)[0]
    app = _app(reusing, w, reusing.folder("student_programs", _slug(w.name), str(time.time_ns())))
    row = app.store.add_student(StudentRow(task_name=w.task_name, base="smollm2-135m", adapter_path="/nowhere"))
    app.close()
    picked = _student(reusing)
    assert picked.report.student_id == row.id and picked.workload.name == w.name
    picked.app.close()


def test_recipe_refuses_a_student_folder_without_a_student(tmp_path):
    """`bench.recipe --student DIR` answers with an earlier run's student: a folder without one is named, before
    anything loads."""
    from bench import recipe

    with pytest.raises(SystemExit, match=r"--student '.*empty' holds no trained student"):
        recipe.main(["again", "--student", str(tmp_path / "empty"), "--eval", "2"])


def test_recipe_with_programs_fixes_what_the_programs_decide(tiny_base):
    """`bench.recipe --programs`: programs induced on the training rows fix the fields they decide in every answer
    (the random model chooses the rest), as the cascade's student answers behind the program tier."""
    from bench import recipe
    from protege.agents.fixed_fields import program_values
    from protege.agents.models.chat_format import with_student_prompt
    from protege.demo.workload import Order
    from protege.distill.train import TrainConfig
    from protege.programs.verify import build

    train_rows = recipe.order_rows("pool", 120)
    eval_rows = with_student_prompt(recipe.order_rows("heldout", 3), TrainConfig().prompt)
    result = recipe._with_programs(tiny_base, train_rows, eval_rows)
    assert result["programs"] and result["fields_fixed_mean"] > 0 and result["eval"]["n"] == 3
    programs = build(
        "extract_order", [(r["input"], r["output"]) for r in train_rows], list(Order.model_fields), promote_at=0.95
    )
    assert len(result["mismatches"]) == 3  # a random model's answers: every one a miss, in the rows' order
    decided = [program_values(programs, row["input"]) for row in eval_rows]
    assert any(decided)
    for fixed, mismatch in zip(decided, result["mismatches"], strict=True):
        answer = json.loads(mismatch["actual"])
        assert {name: answer[name] for name in fixed} == fixed


def test_the_gated_cascade_is_scored_against_the_teacher_alone_on_issue_15s_stream_targets():
    """`student_programs`' served headlines: quality against teacher-only, the share of calls the teacher did not
    answer, cost against teacher-only — each met or not by the stream targets (0.99×, 75%, 0.30×)."""
    from bench.data import orders
    from bench.student_programs import GATED, TEACHER_ONLY, _served_by, _served_headlines

    teacher = {"n": 80, "exact": 1.0, "served": {"teacher": 80}, "cost_per_1k_usd": 10.0}
    gated = {"n": 80, "exact": 0.9875, "served": {"student": 64, "teacher": 16}, "cost_per_1k_usd": 2.5}
    quality, share, cost = _served_headlines(orders(True), {GATED: gated, TEACHER_ONLY: teacher})
    assert (quality.value, quality.met) == (0.9875, False)  # 0.9875 < 0.99 × 1.0
    assert (share.value, share.met) == (0.8, True)
    assert (cost.ratio, cost.met) == (0.25, True)
    assert _served_by(gated) == "student 80%, teacher 20%"
    assert _served_headlines(orders(True), {GATED: gated}) == []


def test_a_student_its_gate_did_not_promote_is_measured_behind_the_floor_its_distill_found():
    """The gated cascade's floor: the stored gate's where the student was promoted behind one, else the floor
    calibrated for promote_at on its eval answers as served (its own where it was judged alone); None where no
    floor reaches promote_at."""
    from types import SimpleNamespace

    from bench.student_programs import _floor, _floor_text
    from protege import Policy

    app = SimpleNamespace(handle=lambda task: SimpleNamespace(spec=SimpleNamespace(policy=Policy(promote_at=0.95))))
    served = {"retention": 0.9, "scores": [1.0] * 18 + [0.0] * 2, "confidences": [0.95] * 18 + [0.5] * 2}
    alone = {"retention": 0.5, "scores": [1.0, 0.0] * 10, "confidences": [0.9] * 20}
    assert _floor(app, "t", {**alone, "served": served}) == 0.95
    assert _floor(app, "t", alone) is None
    gate = {"min_confidence": 0.7, "coverage": 0.8, "retention": 0.95, "kept_quality": 0.9}
    assert _floor(app, "t", {**alone, "gate": gate}) == 0.7
    assert _floor_text({"floor": 0.95}) == " (floor 0.950)" and _floor_text({}) == ""
    assert _floor_text({"floor": None}) == " (no floor)"
    assert _floor(app, "t", {**served, "retention": 0.96}) is None  # promoted without a gate

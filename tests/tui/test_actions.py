"""Pilot tests: drive each console action with keys and check what it changed in the store."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, OptionList, Select, TextArea
from tui_seed import run_id, student_id, trace_id

from protege.errors import UserError
from protege.tui.app import ProtegeConsole, make_app
from protege.tui.screens import traces as traces_screen
from protege.tui.screens.confirm import ConfirmScreen
from protege.tui.screens.skill_diff import SkillDiffScreen
from protege.tui.screens.skill_edit import SkillEditScreen
from protege.tui.screens.trace_detail import TraceScreen

SIZE = (80, 24)


def highlighted_key(app: ProtegeConsole, selector: str) -> str:
    table = app.screen.query_one(selector, DataTable)
    return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value


async def go_to_row(pilot, selector: str, key: str) -> None:
    table = pilot.app.screen.query_one(selector, DataTable)
    table.move_cursor(row=table.get_row_index(key))
    await pilot.pause()


# -- skills --------------------------------------------------------------------------------------------------------


async def test_approve_skill_records_reviewer_and_retires_previous(console, seeded_store, settle):
    """a + y on a draft approves it as the reviewer, with a time, and retires the version approved before."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await go_to_row(pilot, "#skills", "triage:3")
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
    v3, v2 = seeded_store.skill("triage", version=3), seeded_store.skill("triage", version=2)
    assert (v3.status, v3.reviewed_by) == ("approved", "alice") and v3.reviewed_at is not None
    assert v2.status == "retired"


async def test_declining_the_confirm_changes_nothing(console, seeded_store, settle):
    """a then n leaves the draft a draft."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await go_to_row(pilot, "#skills", "triage:3")
        await pilot.press("a", "n")
        await settle(pilot)
    assert seeded_store.skill("triage", version=3).status == "draft"


async def test_reject_skill_with_note(console, seeded_store, settle):
    """r, a typed note and Enter reject the draft with the note and the reviewer's name."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await go_to_row(pilot, "#skills", "extract_order:1")
        await pilot.press("r", *"vague", "enter")
        await settle(pilot)
    row = seeded_store.skill("extract_order", version=1)
    assert (row.status, row.reviewed_by, row.review_note) == ("rejected", "alice", "vague")


async def test_retire_approved_skill(console, seeded_store, settle):
    """x + Enter retires the approved version, so the task has no approved skill left."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await go_to_row(pilot, "#skills", "triage:2")
        await pilot.press("x", "enter")
        await settle(pilot)
    assert seeded_store.skill("triage", version=2).status == "retired"
    assert seeded_store.skill("triage", status="approved") is None


async def test_approve_is_refused_for_a_non_draft(console, seeded_store, settle):
    """a on the approved version opens no dialog and changes nothing (the binding is disabled)."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await go_to_row(pilot, "#skills", "triage:2")
        await pilot.press("a")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, ConfirmScreen)
    assert seeded_store.skill("triage", version=2).status == "approved"


async def open_editor(pilot, settle) -> TextArea:
    """The skills screen's editor, opened on triage v3."""
    await pilot.press("2")
    await settle(pilot)
    await go_to_row(pilot, "#skills", "triage:3")
    await pilot.press("e")
    await settle(pilot)
    return pilot.app.screen.query_one(TextArea)


async def test_edit_saves_a_new_draft_version(console, seeded_store, settle):
    """e opens the SKILL.md in a TextArea; typing and ctrl+s store it as a new draft by the reviewer."""
    async with console.run_test(size=SIZE) as pilot:
        editor = await open_editor(pilot, settle)
        assert "Triage a support ticket" in editor.text
        editor.move_cursor(editor.document.end)
        await pilot.press("enter", "-", "space", "N", "o", "t", "e", "d")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert highlighted_key(pilot.app, "#skills") == "triage:4"
    new = seeded_store.skill("triage")
    assert (new.version, new.status, new.kind, new.author_model) == (4, "draft", "edited", "human:alice")
    assert new.text.rstrip().endswith("- Noted")
    assert seeded_store.skill("triage", version=3).status == "draft"  # versions are immutable


async def test_a_refused_edit_keeps_the_editor_open_with_the_text(console, seeded_store, settle):
    """A save the library refuses (no frontmatter any more) says why and leaves the editor open with the reviewer's
    text, so it can be fixed; the fixed text then saves and closes the editor."""
    async with console.run_test(size=SIZE) as pilot:
        editor = await open_editor(pilot, settle)
        original = editor.text
        editor.load_text("Route tickets by hand.\n")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(pilot.app.screen, SkillEditScreen)
        assert pilot.app.screen.query_one(TextArea).text == "Route tickets by hand.\n"
        assert any("frontmatter" in str(n.message) for n in pilot.app._notifications)
        assert [r.version for r in seeded_store.skills("triage")] == [3, 2, 1]
        editor.load_text(original.rstrip() + "\n- Route by hand when unsure\n")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, SkillEditScreen)
        assert highlighted_key(pilot.app, "#skills") == "triage:4"
    assert seeded_store.skill("triage").text.rstrip().endswith("- Route by hand when unsure")


async def test_edit_cancel_stores_nothing(console, seeded_store, settle):
    """escape leaves the editor without making a version."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("e", "x", "escape")
        await settle(pilot)
    assert [r.version for r in seeded_store.skills("triage")] == [3, 2, 1]


async def test_diff_compares_with_previous_or_marked_version(console, settle):
    """v diffs the highlighted version with the one before it; after m on v1 it diffs against v1."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await go_to_row(pilot, "#skills", "triage:3")
        await pilot.press("v")
        await settle(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, SkillDiffScreen) and (screen.old.version, screen.new.version) == (2, 3)
        assert any(line.startswith("+3. Set priority 1") for line in screen.lines)
        await pilot.press("escape")
        await go_to_row(pilot, "#skills", "triage:1")
        await pilot.press("m")
        await go_to_row(pilot, "#skills", "triage:3")
        await pilot.press("v")
        await settle(pilot)
        assert (pilot.app.screen.old.version, pilot.app.screen.new.version) == (1, 3)


async def test_diff_of_an_edit_compares_with_the_version_it_was_made_from(console, seeded_store, settle):
    """An edit of v1 saved while v3 existed (v4) was diffed with v3, the previous number: every line of v3's own
    changes showed as the reviewer's. It is diffed with v1, the version it was made from."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await go_to_row(pilot, "#skills", "triage:1")
        await pilot.press("e")
        await settle(pilot)
        editor = pilot.app.screen.query_one(TextArea)
        editor.load_text(editor.text.rstrip() + "\nOne added line.\n")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert highlighted_key(pilot.app, "#skills") == "triage:4"
        await pilot.press("v")
        await settle(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, SkillDiffScreen) and (screen.old.version, screen.new.version) == (1, 4)
        changed = [line for line in screen.lines if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        body = [line for line in changed if not line[1:].startswith("  ")]  # metadata: kind, model, revises
        assert body == ["+One added line."]


async def test_state_filter_lists_only_that_state(console, settle):
    """Choosing 'draft' in the state filter lists only draft versions."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        pilot.app.screen.query_one("#state", Select).value = "draft"
        await settle(pilot)
        assert set(pilot.app.screen.rows) == {"extract_order:1", "triage:3"}


# -- traces --------------------------------------------------------------------------------------------------------


async def test_label_from_table_and_from_transcript(console, seeded_store, settle):
    """b in the table labels the highlighted trace bad; g in its transcript view labels it good (latest counts),
    and the table's label column shows it on return."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await settle(pilot)
        tid = highlighted_key(pilot.app, "#traces")
        await pilot.press("b")
        await settle(pilot)
        assert [(lb.verdict, lb.reviewer) for lb in seeded_store.labels(tid)][-1] == ("bad", "alice")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(pilot.app.screen, TraceScreen) and pilot.app.screen.trace_id == tid
        await pilot.press("g", "escape")
        await settle(pilot)
        table = pilot.app.screen.query_one("#traces", DataTable)
        assert "+" in str(table.get_cell(tid, "label"))  # the table shows the new verdict without a reload
    assert seeded_store.labels(tid)[-1].verdict == "good"


async def test_transcript_shows_turns_output_and_errors(console, settle):
    """An escalated replay attempt shows its turns, its raw output text and its validation error."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.app.push_screen(TraceScreen(trace_id("triage", 12, 0)))
        await settle(pilot)
        screen = pilot.app.screen
        transcript = str(screen.query_one("#transcript").render())
        assert "▌ system" in transcript and "▌ user" in transcript and "Ticket #12" in transcript
        assert "priority: Input should be a valid integer" in str(screen.query_one("#errors").render())
        assert '"priority": "high"' in str(screen.query_one("#output").render())


async def test_jump_to_other_attempt_of_the_run(console, settle):
    """r lists the run's attempts; picking the teacher's escalation opens that trace."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.app.push_screen(TraceScreen(trace_id("triage", 12, 0)))
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        options = pilot.app.screen.query_one(OptionList)
        assert options.option_count == 2
        await pilot.press("down", "enter")
        await settle(pilot)
        assert pilot.app.screen.trace_id == trace_id("triage", 12, 1)
        assert pilot.app.screen.trace.run_id == run_id("triage", 12)


async def test_trace_pages_filters_and_sort(console, seeded_store, settle, monkeypatch):
    """Pages hold PAGE_SIZE rows in store order; ] and running off the end page on; filters and sort go to SQL."""
    monkeypatch.setattr(traces_screen, "PAGE_SIZE", 20)
    total = seeded_store.count_traces()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await settle(pilot)
        screen = pilot.app.screen
        assert list(screen.page_rows) == [t.id for t in seeded_store.traces(limit=20)]
        assert f"1–20 of {total} traces" in str(screen.query_one("#page-info").render())
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert list(screen.page_rows) == [t.id for t in seeded_store.traces(limit=20, offset=20)]
        await go_to_row(pilot, "#traces", list(screen.page_rows)[-1])
        await pilot.press("down")
        await settle(pilot)
        assert screen.page == 2 and list(screen.page_rows) == [t.id for t in seeded_store.traces(offset=40)]
        screen.query_one("#tier", Select).value = "teacher"
        await settle(pilot)
        assert screen.total == seeded_store.count_traces(tier="teacher") and screen.page == 0
        assert {r.tier for r in screen.page_rows.values()} == {"teacher"}
        screen.query_one("#tier", Select).clear()
        await pilot.press("s")  # date -> cost, most expensive first
        await settle(pilot)
        everything = seeded_store.traces(limit=None)
        by_cost = sorted(everything, key=lambda t: (-t.cost_usd, -t.created_at.timestamp(), t.id))
        assert screen.query_state.sort == "cost" and screen.total == len(everything)
        assert list(screen.page_rows) == [t.id for t in by_cost[:20]]


# -- students ------------------------------------------------------------------------------------------------------


async def test_promote_then_demote_with_confirm(console, seeded_store, settle):
    """p + y promotes a candidate (the promoted one becomes a candidate); d + y demotes it."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await settle(pilot)
        await go_to_row(pilot, "#students", student_id("triage-a"))
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert seeded_store.student(student_id("triage-a")).state == "promoted"
        assert seeded_store.student(student_id("triage-b")).state == "candidate"
        await go_to_row(pilot, "#students", student_id("triage-a"))
        await pilot.press("d", "y")
        await settle(pilot)
    assert seeded_store.student(student_id("triage-a")).state == "demoted"


async def test_students_screen_shows_a_running_distill(console, seeded_store, settle):
    """An automatic distill holding its lease is shown under the student record, with its progress."""
    from protege.store.background import process_owner

    seeded_store.acquire_lease(
        "distill:triage",
        owner=process_owner(),
        ttl_s=60,
        info={"phase": "train", "done": 3, "total": 8, "pid": 99, "started_at": 0},
    )
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await settle(pilot)
        record = str(pilot.app.screen.query_one("#student-record").render())
    assert "distilling 'triage' now: train 3/8" in record


# -- the app -------------------------------------------------------------------------------------------------------


async def test_dashboard_rows_come_from_the_ledger(console, seeded_store, settle):
    """The dashboard shows each task's calls and savings as the store's ledger computes them, busiest first."""
    async with console.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = pilot.app.screen.query_one("#tasks", DataTable)
        led = seeded_store.ledger("triage")
        assert table.get_row_at(0)[0] == "triage" and table.get_row_at(0)[1] == f"{led.calls:,}"
        assert table.get_row_at(0)[6] == f"{led.savings_ratio:.0%}"
        chart = pilot.app.screen.query_one("#chart")
        assert sum(sum(c.values()) for c in chart.series.counts) == led.calls


async def test_command_palette_offers_screen_actions(console, settle):
    """The palette's commands include the sections and the current screen's enabled actions."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await go_to_row(pilot, "#skills", "triage:3")
        titles = {c.title for c in pilot.app.get_system_commands(pilot.app.screen)}
        assert {"Go to Traces", "Approve", "Reject", "Edit"} <= titles and "Retire" not in titles


def test_make_app_refuses_app_and_db_together(seeded_url):
    """Passing both a Protege app and a db URL is a UserError that names the URL."""
    from protege.app import Protege

    p = Protege(db=seeded_url)
    with pytest.raises(UserError, match="console.db"):
        make_app(p, db=seeded_url)
    p.close()


async def test_db_url_builds_a_protege_with_no_tasks(seeded_url, settle):
    """Given only a db URL the console makes its own Protege (no tasks registered) and still lists the tasks."""
    app = make_app(db=seeded_url, reviewer="r")
    assert app.owns_protege and app.protege.tasks == {} and app.protege.store.url == seeded_url
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert pilot.app.screen.query_one("#tasks", DataTable).row_count == 2


async def test_mouse_switches_sections_and_sorts_by_header(console, settle):
    """Clicking 'Skills' in the top bar opens the skills; clicking the Cost header sorts traces by cost."""
    from protege.tui.screens.skills import SkillsScreen
    from protege.tui.screens.traces import TracesScreen
    from protege.tui.widgets.nav_bar import NavBar

    async with console.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.click(NavBar, offset=(25, 0))  # " protege  1 Dashboard  [ 2 Skills ]"
        await settle(pilot)
        assert isinstance(pilot.app.screen, SkillsScreen)
        await pilot.press("3")
        await settle(pilot)
        await pilot.click("#traces", offset=(63, 0))  # the header row, over "Cost"
        await settle(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, TracesScreen) and screen.query_state.sort == "cost"
        await pilot.click("#traces", offset=(63, 0))  # again: ascending
        await settle(pilot)
        assert not screen.query_state.descending


async def test_command_palette_runs_a_screen_action(console, seeded_store, settle):
    """ctrl+p, typing 'Approve' and Enter opens the approve dialog for the highlighted draft; y approves it."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await go_to_row(pilot, "#skills", "triage:3")
        await pilot.press("ctrl+p", *"Approve")
        for _ in range(50):  # the palette searches in the background: wait for its first hit
            await pilot.pause(0.1)
            hits = pilot.app.screen.query(OptionList)
            if hits and hits.first().option_count and "Approve" in str(hits.first().get_option_at_index(0).prompt):
                break
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
    assert seeded_store.skill("triage", version=3).status == "approved"


async def test_every_section_loads_on_postgres(pg_url, settle):
    """On PostgreSQL the dashboard, skills, traces and students all load the seeded rows."""
    from tui_seed import seed

    from protege.store import Store

    with Store(pg_url) as store:
        seed(store)
        traces = store.count_traces()
    app = make_app(db=pg_url, reviewer="alice")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        counts = {}
        for key, table in (("1", "#tasks"), ("2", "#skills"), ("3", "#traces"), ("4", "#students")):
            await pilot.press(key)
            await settle(pilot)
            counts[table] = pilot.app.screen.query_one(table, DataTable).row_count
        assert pilot.app.screen.query_one("#student-record").render()  # the detail pane was filled
    assert counts == {"#tasks": 2, "#skills": 4, "#traces": min(traces, traces_screen.PAGE_SIZE), "#students": 3}


# -- opening on a trace ----------------------------------------------------------------------------------------------


async def test_console_opens_on_a_trace_given_by_id(seeded_url, settle):
    """`protege tui --trace ID` (a span's protege.trace_id): the trace opens first, over the traces section."""
    wanted = trace_id("triage", 0, 0)
    console = make_app(db=seeded_url, reviewer="alice", trace=wanted)
    async with console.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(pilot.app.screen, TraceScreen) and pilot.app.screen.trace_id == wanted
        assert wanted[:8] in str(pilot.app.screen.query_one("#trace-title").render())
        await pilot.press("escape")
        await settle(pilot)
        assert pilot.app.current_mode == "traces" and not isinstance(pilot.app.screen, TraceScreen)


def test_tui_refuses_an_unknown_trace_id(seeded_url, monkeypatch):
    from typer.testing import CliRunner

    from protege.cli import app as cli

    monkeypatch.setenv("PROTEGE_DB", seeded_url)
    monkeypatch.delenv("PROTEGE_APP", raising=False)
    result = CliRunner().invoke(cli, ["tui", "--trace", "no-such-trace"])
    assert result.exit_code == 2 and "no trace 'no-such-trace'" in result.stderr


def test_make_app_refuses_a_trace_that_is_not_in_the_store(seeded_url):
    """make_app(trace=...) with an id never stored opened a screen saying the trace "is no longer in the store"."""
    with pytest.raises(UserError, match="no trace 'never-stored' in the store; list traces with `protege traces`"):
        make_app(db=seeded_url, reviewer="r", trace="never-stored")


@pytest.mark.parametrize(("size", "shown"), [(SIZE, "extract_order"), ((50, 24), "extract_or…")])
async def test_task_names_are_whole_where_the_terminal_has_room(seeded_url, settle, size, shown):
    """The task columns had fixed widths: `extract_order` was `extract_or…` at any terminal size. Where there is
    no room, the name is clipped to the column's least width, as before."""
    async with make_app(db=seeded_url, reviewer="r").run_test(size=size) as pilot:
        await pilot.press("3")
        await settle(pilot)
        table = pilot.app.screen.query_one("#traces", DataTable)
        assert shown in {table.get_row_at(i)[0] for i in range(table.row_count)}


async def test_the_tier_filter_offers_the_skill_loops_own_traces(console, settle):
    """The Tier filter had no `author` (the skill author's paid calls) nor `evidence` to pick."""
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await settle(pilot)
        pilot.app.screen.query_one("#tier", Select).value = "author"
        await settle(pilot)
        assert pilot.app.screen.total == 0 and pilot.app.screen.query_one("#traces", DataTable).row_count == 0


def test_tui_opens_on_a_trace_by_the_id_prefix_listings_show(seeded_url, monkeypatch):
    """`protege traces` prints 12-character ids and says a prefix is enough: `tui --trace` takes one too."""
    from typer.testing import CliRunner

    import protege.tui.app as tui_app
    from protege.cli import app as cli
    from protege.store import Store

    opened = {}

    class Opened:
        def run(self):
            opened["ran"] = True

    monkeypatch.setattr(tui_app, "make_app", lambda db, trace: opened.update(trace=trace) or Opened())
    monkeypatch.setenv("PROTEGE_DB", seeded_url)
    monkeypatch.delenv("PROTEGE_APP", raising=False)
    with Store(seeded_url) as store:
        full = store.traces(limit=1)[0].id
    result = CliRunner().invoke(cli, ["tui", "--trace", full[:12]])
    assert result.exit_code == 0 and opened == {"trace": full, "ran": True}
    short = CliRunner().invoke(cli, ["tui", "--trace", full[:2]])
    assert short.exit_code == 2 and "an id prefix needs at least 4 characters" in short.stderr

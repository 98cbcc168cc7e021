"""Skills: every version by task and state; SKILL.md rendered; diff two versions; approve, reject, retire, edit.

Writes go through the Protege facade (approve_skill, reject_skill) or its SkillLibrary (retire, edit), so the
review rules (draft -> approved | rejected, approved -> retired, edits are new drafts) are the library's own.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.widgets import DataTable, Footer, Markdown, Select, Static

from protege.errors import ProtegeError
from protege.skills import Skill
from protege.store import SkillRow
from protege.tui.format import clip, status_markup, when
from protege.tui.screens.base import ReviewScreen
from protege.tui.screens.confirm import ConfirmScreen
from protege.tui.screens.skill_diff import SkillDiffScreen
from protege.tui.screens.skill_edit import SkillEditScreen
from protege.tui.widgets.nav_bar import NavBar

STATES = ("draft", "approved", "rejected", "retired")
NEEDS = {"approve": "draft", "reject": "draft", "retire": "approved"}


class SkillsScreen(ReviewScreen):
    """A list of skill versions (left) and the highlighted one's review record and SKILL.md (right)."""

    BINDINGS = [
        Binding("a", "approve", "Approve"),
        Binding("r", "reject", "Reject"),
        Binding("x", "retire", "Retire"),
        Binding("e", "edit", "Edit"),
        Binding("v", "diff", "Diff"),
        Binding("m", "mark", "Mark", show=False),
        Binding("f5,ctrl+r", "refresh", "Refresh", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, SkillRow] = {}
        self.marked: SkillRow | None = None
        self.select_after_load: str | None = None

    def compose(self) -> ComposeResult:
        yield NavBar("skills")
        with Horizontal():
            with Vertical(id="skill-list"):
                yield Select([(s, s) for s in STATES], prompt="all states", id="state", compact=True)
                yield DataTable(id="skills", cursor_type="row", zebra_stripes=True)
            with Vertical(id="skill-pane"):
                yield Static(id="review")
                with VerticalScroll(id="preview-scroll"):
                    yield Markdown(id="preview")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#skills", DataTable)
        table.add_column("Task", width=14, key="task")
        table.add_column("v", width=3, key="version")
        table.add_column("State", width=8, key="status")
        table.focus()
        self.load()

    # -- loading -----------------------------------------------------------------------------------------------

    def action_refresh(self) -> None:
        self.load()

    def on_select_changed(self, event: Select.Changed) -> None:
        self.load()

    @work(exclusive=True, group="skills")
    async def load(self) -> None:
        state = self.query_one("#state", Select).value
        status = state if isinstance(state, str) else None
        try:
            rows = await self.read(self.store.skills, status=status)
        except Exception as exc:
            self.fail(exc)
            return
        table = self.query_one("#skills", DataTable)
        current = self.current
        keep = self.select_after_load or (_key(current) if current else None)
        self.select_after_load = None
        table.clear()
        self.rows = {_key(r): r for r in rows}
        for key, r in self.rows.items():
            table.add_row(clip(r.task_name, 14), str(r.version), status_markup(r.status), key=key)
        if keep in self.rows:
            table.move_cursor(row=table.get_row_index(keep))
        self.show(self.current)

    @property
    def current(self) -> SkillRow | None:
        table = self.query_one("#skills", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.rows.get(key or "")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show(self.rows.get(event.row_key.value or ""))

    def show(self, row: SkillRow | None) -> None:
        self.query_one("#review", Static).update(_review_record(row, self.marked))
        self.query_one("#preview", Markdown).update(_as_markdown(row.text, row.files) if row else "")
        self.query_one("#preview-scroll", VerticalScroll).scroll_home(animate=False)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in NEEDS:  # shown but greyed out when the highlighted version is in the wrong state
            row = self.current
            return row is not None and row.status == NEEDS[action] or None
        if action in ("edit", "diff", "mark"):
            return self.current is not None or None
        return True

    # -- review actions ----------------------------------------------------------------------------------------

    def action_approve(self) -> None:
        row = self._current_in("draft", "approve")
        if row is None:
            return
        serving = self.protege.skills.approved(row.task_name)
        retires = f"; v{serving.version} (approved now) retires" if serving else ""
        question = f"Approve {row.task_name} v{row.version}? Replay will use it{retires}."

        def approve(note: str | None) -> None:
            if note is not None and self.act(
                self.protege.approve_skill,
                row.task_name,
                row.version,
                reviewer=self.reviewer,
                done=f"{row.task_name} v{row.version} approved",
            ):
                self.load()

        self.app.push_screen(ConfirmScreen(question, yes="Approve"), approve)

    def action_reject(self) -> None:
        row = self._current_in("draft", "reject")
        if row is None:
            return

        def reject(note: str | None) -> None:
            if note is not None and self.act(
                self.protege.reject_skill,
                row.task_name,
                row.version,
                reviewer=self.reviewer,
                note=note or None,
                done=f"{row.task_name} v{row.version} rejected",
            ):
                self.load()

        self.app.push_screen(
            ConfirmScreen(f"Reject {row.task_name} v{row.version}?", with_note=True, yes="Reject"), reject
        )

    def action_retire(self) -> None:
        row = self._current_in("approved", "retire")
        if row is None:
            return

        def retire(note: str | None) -> None:
            if note is None:
                return
            done = self.act(
                self.protege.skills.retire,
                row.task_name,
                row.version,
                by=self.reviewer,
                note=note or None,
                done=f"{row.task_name} v{row.version} retired",
            )
            if done:
                self.protege.tiers.invalidate(row.task_name)  # replay must stop using it now, as approve does
                self.load()

        question = f"Retire {row.task_name} v{row.version}? Replay stops using it until another is approved."
        self.app.push_screen(ConfirmScreen(question, with_note=True, yes="Retire"), retire)

    def action_edit(self) -> None:
        row = self.current
        if row is None:
            return

        def save(text: str) -> SkillRow | None:
            new = self.act(self.protege.skills.edit, row.task_name, text, by=self.reviewer, base=row.version)
            return new if isinstance(new, SkillRow) else None  # act() said why the edit was refused

        def saved(new: SkillRow | None) -> None:
            if new is None:  # cancelled
                return
            self.notify(f"saved as {new.task_name} v{new.version} (draft, awaiting review)", timeout=4)
            self.select_after_load = _key(new)
            self.load()

        self.app.push_screen(SkillEditScreen(row, save), saved)

    def action_mark(self) -> None:
        self.marked = self.current
        self.show(self.current)

    def action_diff(self) -> None:
        row = self.current
        if row is None:
            return
        base = (
            self.marked
            if self.marked and self.marked.task_name == row.task_name and self.marked.version != row.version
            else self._previous(row)
        )
        if base is None:
            self.notify(
                f"{row.task_name} v{row.version} has no earlier version; mark one with m to compare", severity="warning"
            )
            return
        old, new = sorted((base, row), key=lambda r: r.version)
        self.app.push_screen(SkillDiffScreen(old, new))

    def _previous(self, row: SkillRow) -> SkillRow | None:
        """The version `row` was made from (an edit of v1 saved while v2 existed compares with v1), else the one
        numbered before it."""
        base = self.protege.skills.base(row)
        if base is not None:
            return base
        older = [r for r in self.protege.skills.versions(row.task_name) if r.version < row.version]
        return max(older, key=lambda r: r.version, default=None)

    def _current_in(self, status: str, verb: str) -> SkillRow | None:
        row = self.current
        if row is not None and row.status != status:
            self.notify(f"only a {status} version can be {verb}d; v{row.version} is {row.status}", severity="warning")
            return None
        return row


def _key(row: SkillRow) -> str:
    return f"{row.task_name}:{row.version}"


def _review_record(row: SkillRow | None, marked: SkillRow | None) -> str:
    if row is None:
        return "[dim]No skills here yet: the teacher writes one after its first valid answer.[/]"
    head = (
        f"[bold]{escape(row.name)}[/] v{row.version} {status_markup(row.status)} · {row.kind}"
        f" · by {escape(row.author_model or '—')} · {when(row.created_at)}"
    )
    if row.reviewed_by:
        verb = {"approved": "approved", "rejected": "rejected", "retired": "retired"}.get(row.status, "reviewed")
        head += f"\n{verb} by [bold]{escape(row.reviewed_by)}[/] at {when(row.reviewed_at)}"
        if row.review_note:
            head += f" — {escape(clip(row.review_note, 60))}"
    elif row.review_note:
        head += f"\n{escape(clip(row.review_note, 70))}"
    else:
        head += "\n[dim]not reviewed yet[/]"
    if marked is not None:
        head += f"  [reverse] marked: {escape(marked.task_name)} v{marked.version} [/]"
    return head


def _as_markdown(text: str, files: dict | None = None) -> str:
    """SKILL.md for the Markdown widget: the frontmatter as a wrapped list of fields, a rule, then the body."""
    try:
        skill = Skill.parse(text, files=files)
    except ProtegeError:  # not valid SKILL.md (an old or hand-made row): show it as it is
        return text
    lines = [f"- **{k}**: {v}" for k, v in skill.header()]
    if skill.files:
        lines.append("- **files**: " + ", ".join(sorted(skill.files)))
    return "\n".join(lines) + "\n\n---\n\n" + skill.body + _programs_markdown(skill.files)


def _programs_markdown(files: dict[str, str]) -> str:
    """Per field: the induced program, whether it is served, its held-out accuracy and refusals (if any); then
    the authored program's per-field record and which source serves each field."""
    import json

    from protege.programs import ProgramSet
    from protege.programs.authored import AuthoredProgram, authored_markdown
    from protege.programs.render import markdown_table

    text, induced, out = files.get("scripts/fields.json"), None, ""
    if text:
        try:
            induced = ProgramSet.from_json(json.loads(text))
            out += "\n---\n\n" + markdown_table(induced)
        except (ValueError, KeyError, TypeError):
            out += "\n---\n\nscripts/fields.json could not be read\n"
    authored = AuthoredProgram.from_files(files)
    return out + ("\n---\n\n" + authored_markdown(induced, authored) if authored is not None else "")

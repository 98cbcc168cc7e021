"""How the CLI lays out tables: the terminal's width when there is one, whole columns when piped."""

from __future__ import annotations

from protege.cli.output import PIPE_WIDTH, table

ROW = ["a-task-with-a-long-name", "x" * 24, "12.5%", "$0.0031", "a note that runs on for a while past eighty"]
COLUMNS = ["task", "student", "exact", "cost", "note"]


def show(capsys) -> list[str]:
    table("Students", COLUMNS, [ROW], right=("exact", "cost"), flex="note", optional=("cost",))
    return capsys.readouterr().out.splitlines()


def test_piped_output_keeps_every_column_whole(monkeypatch, capsys):
    """stdout is captured (not a terminal) and $COLUMNS is unset: rich alone would cut this table at 80."""
    monkeypatch.delenv("COLUMNS", raising=False)
    lines = show(capsys)
    assert any(ROW[-1] in line and "$0.0031" in line for line in lines)
    assert max(map(len, lines)) <= PIPE_WIDTH


def test_a_narrow_columns_setting_is_obeyed(monkeypatch, capsys):
    """$COLUMNS is the user's word even when piped: the table fits it, optional columns going first."""
    monkeypatch.setenv("COLUMNS", "70")
    lines = show(capsys)
    assert all(len(line) <= 70 for line in lines)
    assert not any("$0.0031" in line for line in lines)


def test_a_full_terminal_keeps_every_column_and_the_flex_one_takes_the_rest(monkeypatch, capsys):
    """At 120 columns a trace list lost tier, valid and cost to rich's own negotiation; every shown column now keeps
    its cells whole and the flex column alone is cut, to the width."""
    monkeypatch.setenv("COLUMNS", "120")
    columns = ["id", "created", "tier", "model", "valid", "cost", "latency", "output / errors"]
    row = ["693fe3e66e31", "2026-12-07 16:46", "student", "local:a43294557c7348bca…", "yes", "$0.000021", "850 ms"]
    table("traces", columns, [[*row, '{"title":"x"' * 20]], right=("cost", "latency"), flex="output / errors")
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.strip().startswith("id"))
    body = next(line for line in lines if "693fe3e66e31" in line)
    assert all(name in header for name in columns) and all(cell in body for cell in row)
    assert body.rstrip().endswith("…") and all(len(line) <= 120 for line in lines)


def test_wide_characters_are_measured_in_terminal_columns(monkeypatch, capsys):
    """A CJK task name takes two columns a character: measured so, it is shown whole where there is room."""
    monkeypatch.setenv("COLUMNS", "120")
    table("tasks", ["task", "calls"], [["票务分类任务", 12]], right=("calls",))
    assert any("票务分类任务" in line for line in capsys.readouterr().out.splitlines())


def test_an_optional_column_the_table_lacks_is_skipped(monkeypatch, capsys):
    """`traces TASK` has no task column but lists it as optional: at 60 columns this raised list.remove's
    ValueError; the columns that exist are dropped instead, at every narrow width."""
    columns = ["id", "created", "tier", "model", "valid", "cost", "latency", "output / errors"]
    row = ["693fe3e66e31", "2026-12-07 16:46", "student", "local:a43294557c7348bca…", "yes", "$0.000021", "850 ms"]
    for width in (40, 60, 70):
        monkeypatch.setenv("COLUMNS", str(width))
        table(
            "traces",
            columns,
            [[*row, '{"title":"x"}']],
            right=("cost", "latency"),
            flex="output / errors",
            optional=("created", "model", "task", "latency"),
        )
        lines = capsys.readouterr().out.splitlines()
        assert all(len(line) <= width for line in lines)
        assert any("693fe3e" in line and "$0.0" in line for line in lines)
        assert not any("2026-12-07" in line or "850 ms" in line for line in lines)


def test_dollar_amounts_put_the_sign_before_the_dollar():
    from protege.cli.output import usd

    assert [usd(-0.0127), usd(0.0127), usd(-250.0), usd(-0.0000123), usd(0.0)] == [
        "-$0.0127",
        "$0.0127",
        "-$250.00",
        "-$0.000012",
        "$0",
    ]

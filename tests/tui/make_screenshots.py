"""Write docs/screenshots/*.svg: each console screen at 80x24 over the fixed seed store (App.save_screenshot).

Run: .venv/bin/python tests/tui/make_screenshots.py [OUT_DIR]   (default: docs/screenshots)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from tui_seed import seed, student_id, trace_id

from protege.store import Store

ROOT = Path(__file__).resolve().parents[2]


async def settle(pilot) -> None:
    for _ in range(10):
        await pilot.pause()
        if not any(w.is_running or w.state.name == "PENDING" for w in pilot.app.workers):
            break
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def pick(selector: str, key: str):
    def move(app) -> None:
        table = app.screen.query_one(selector)
        table.move_cursor(row=table.get_row_index(key), animate=False)

    return move


async def shoot(url: str, out: Path) -> list[Path]:
    from textual.widgets import TextArea

    from protege.tui.app import make_app
    from protege.tui.screens.trace_detail import TraceScreen

    def open_trace(app) -> None:
        app.push_screen(TraceScreen(trace_id("triage", 12, 0)))

    def no_blink(app) -> None:
        app.screen.query_one(TextArea).cursor_blink = False

    shots = {  # file name -> steps (keys, or functions of the app) from a fresh console
        "dashboard": [],
        "skills": ["2", pick("#skills", "triage:2")],
        "skill-diff": ["2", pick("#skills", "triage:3"), "v"],
        "skill-edit": ["2", pick("#skills", "triage:3"), "e", no_blink],
        "skill-approve": ["2", pick("#skills", "triage:3"), "a"],
        "traces": ["3"],
        "trace": ["3", open_trace],
        "run-attempts": ["3", open_trace, "r"],
        "students": ["4", pick("#students", student_id("triage-b"))],
        "student-promote": ["4", pick("#students", student_id("triage-a")), "p"],
    }
    written = []
    for name, steps in shots.items():
        app = make_app(db=url, reviewer="alice")
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            for step in steps:
                if callable(step):
                    step(app)
                else:
                    await pilot.press(step)
                await settle(pilot)
            written.append(Path(app.save_screenshot(f"{name}.svg", str(out))))
    return written


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/console.db"
        with Store(url) as store:
            seed(store)
        for path in asyncio.run(shoot(url, out)):
            print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()

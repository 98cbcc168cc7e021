"""Worker: do one piece of protege work and SIGKILL itself at a chosen point inside it.

    python kill_at.py teacher URL PROVIDER BASE_URL   a call whose real-SDK teacher answers; dies once the answer
                                                      is written, before the caller gets it
    python kill_at.py dataset URL OUT_DIR              build_dataset; dies after 50 lines of the data files
    python kill_at.py export DATASET_DIR DEST WHEN     export_dataset; dies just before (WHEN=before) or just
                                                      after (WHEN=after) its switch (os.replace of the symlink,
                                                      or the exchange of a real folder)
    python kill_at.py skills URL DEST                  export_skills; dies writing the skill's second file

The API key for `teacher` comes from PROTEGE_TEST_KEY (never on the command line).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from common import register_triage


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def after(n: int, fn):
    """`fn` wrapped to SIGKILL the process once it has returned `n` times."""
    calls = [0]

    def wrapped(*args, **kwargs):
        result = fn(*args, **kwargs)
        calls[0] += 1
        if calls[0] >= n:
            die()
        return result

    return wrapped


def before(n: int, fn):
    """`fn` wrapped to SIGKILL the process when it is called for the `n`th time (before it runs)."""
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] >= n:
            die()
        return fn(*args, **kwargs)

    return wrapped


def teacher(url: str, provider: str, base_url: str) -> None:
    from protege import Protege

    key = os.environ["PROTEGE_TEST_KEY"]
    if provider == "anthropic":
        from protege.agents.models.anthropic import AnthropicModel

        model = AnthropicModel("claude-opus-4-5", api_key=key, base_url=base_url, max_retries=0)
    else:
        from protege.agents.models.openai import OpenAIModel

        model = OpenAIModel("gpt-4o", api_key=key, base_url=base_url, max_retries=0)
    app = Protege(db=url, teacher=model, project_dir=Path(url.removeprefix("sqlite:///")).parent / ".protege")
    # dies once the attempt's one write (trace + run outcome) is committed, before the caller gets the answer
    app.store.record_attempt = after(1, app.store.record_attempt)
    register_triage(app)
    app.run("triage", {"ticket": {"subject": "refund please"}})


def dataset(url: str, out_dir: str) -> None:
    from protege.distill import export
    from protege.distill.dataset import build_dataset
    from protege.store import Store

    export.JsonlWriter.write = after(50, export.JsonlWriter.write)
    build_dataset(Store(url), "triage", instructions="Route a support ticket.", out_dir=out_dir)


def export_files(dataset_dir: str, dest: str, when: str) -> None:
    from protege.distill import export

    # the one switch: os.replace of the symlink, or the folder exchange when `dest` is a real folder (the module's
    # `os` is the os module: patching its replace affects this process only)
    wrap = before if when == "before" else after
    export.os.replace = wrap(1, os.replace)
    export._exchange = wrap(1, export._exchange)
    export.export_dataset(dataset_dir, dest)


def skills(url: str, dest: str) -> None:
    from protege.skills import SkillLibrary, folders
    from protege.store import Store

    folders._write_text = before(2, folders._write_text)
    SkillLibrary(Store(url)).export(dest, force=True)  # over the v1 exported before


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"teacher": teacher, "dataset": dataset, "export": export_files, "skills": skills}[mode](*args)
    print(f"{mode}: finished without being killed", file=sys.stderr)
    sys.exit(3)

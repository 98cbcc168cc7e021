"""A trained tiny student in a real store, for the export and serving tests.

The tiny random Llama (the `tiny_base` fixture) is LoRA-trained a few steps on four rows, then recorded as
a student of a registered task, with the hash of its files, as `app.distill` would record it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel
from student_support import chat_row

from protege import Protege

INSTRUCTIONS = "Sort the message into a queue."
MESSAGES = [
    ("refund my card", "billing"),
    ("app crashes on start", "bug"),
    ("reset my password", "account"),
    ("nice weather", "other"),
]
ROWS = [chat_row(INSTRUCTIONS, {"message": {"text": text}}, {"queue": queue}) for text, queue in MESSAGES]
_MEMO: dict[str, Path] = {}


class Message(BaseModel):
    text: str


class Routing(BaseModel):
    queue: Literal["billing", "bug", "account", "other"]


def trained_adapter(tiny_base: Path, factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the tiny base, trained a few steps once per session (its weights moved: merging it
    changes the model)."""
    if "adapter" not in _MEMO:
        from protege.distill.train import TrainConfig, train_student

        config = TrainConfig(
            method="lora",
            learning_rate=2e-2,
            batch_size=4,
            logging_steps=5,
            torch_threads=2,
            warmup_ratio=0.0,
            lr_scheduler="constant",
            max_steps=12,
        )
        _MEMO["adapter"] = train_student(ROWS, tiny_base, factory.mktemp("served") / "s", config).adapter_path
    return _MEMO["adapter"]


def adapter_with_short_bound(tiny_base: Path, factory: pytest.TempPathFactory, folder: Path) -> Path:
    """A copy of the trained adapter at `folder` whose answer profile stops every answer here after 4 tokens (a
    bound learned from traces, as `app.distill` writes it beside the weights)."""
    import shutil

    from protege.agents.models.answer_profile import AnswerProfile

    shutil.copytree(trained_adapter(tiny_base, factory), folder)
    AnswerProfile(traces=12, max_answer_tokens=4).save(folder)
    return folder


def make_app(tmp_path: Path, tiny_base: Path, adapter: Path, **options) -> tuple[Protege, str]:
    """An app with the `route` task registered and the trained adapter recorded as its promoted student."""
    from protege.distill.pipeline import dir_hash
    from protege.store import StudentRow

    app = Protege(
        db=f"sqlite:///{tmp_path}/app.db", project_dir=tmp_path / ".protege", student_base=str(tiny_base), **options
    )

    @app.task
    def route(message: Message) -> Routing:
        """Sort the message into a queue."""

    row = app.store.add_student(
        StudentRow(
            task_name="route",
            base=str(tiny_base),
            adapter_path=str(adapter),
            adapter_hash=dir_hash(adapter),
            state="promoted",
        )
    )
    return app, row.id

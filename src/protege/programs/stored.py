"""What the induced and the authored programs share: the skill version a new program version builds on, and the
shadow rule that takes programs out of service."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any


def base_skill(library: Any, task: str, instructions: str) -> Any:
    """The skill a program version builds on: the task's newest (its files carry over), or a minimal one."""
    from protege.skills.library import SkillLibrary
    from protege.skills.skill import Skill

    latest = library.latest(task)
    if latest is not None:
        return SkillLibrary.to_skill(latest)
    name = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:64].strip("-") or "task"
    return Skill(name=name, description=instructions[:1000] or task, body=f"# {task}\n\n{instructions}\n")


def shadow_verdict(store: Any, task: Any, created_at: str | None) -> str | None:
    """Why programs written at `created_at` should leave service — the teacher's shadow answers on program-served
    calls since then show agreement below `Policy.demote_below` — or None while they hold."""
    from protege.stats import window_below

    policy = task.spec.policy
    since = datetime.fromisoformat(created_at) if created_at else None
    mean, n = store.shadow_agreement(task.spec.name, "program", window=policy.shadow_window, since=since)
    upper = window_below(mean, n, policy.shadow_window, policy.demote_below)  # evidence, not the mean alone
    if upper is None:
        return None
    return (
        f"demoted: shadow agreement {mean:.3f} over {n} calls (at most {upper:.3f}, 99% bound) "
        f"< Policy.demote_below {policy.demote_below:.3f}"
    )

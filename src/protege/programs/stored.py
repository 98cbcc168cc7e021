"""What the induced and the authored programs share: the skill version a new program version builds on, and the
shadow rule that takes programs out of service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from protege.errors import UserError


def base_skill(library: Any, task: str, instructions: str) -> Any:
    """The skill a program version builds on (its files carry over): the task's approved skill, else the newest
    draft awaiting review (`SkillLibrary.content_base`), else a minimal one. Never a rejected or retired version,
    nor a field-program copy of one: a reviewer's rejection would come back as a new draft, and be approved by the
    next `skill approve`."""
    from protege.skills.exemplar import describe
    from protege.skills.library import SkillLibrary
    from protege.skills.skill import Skill, skill_name

    base = library.content_base(task)
    if base is not None:
        return SkillLibrary.to_skill(base)
    try:
        name = skill_name(task)
    except UserError:  # a task name with no letters or digits
        name = "task"
    # The instructions come with every replay call: the body points to them rather than copying them (a long
    # docstring copied in broke the spec's body budget, and no field program could be stored).
    body = f"# {task}\n\nFollow the task's instructions and answer with one JSON object matching its output schema.\n"
    return Skill(name=name, description=describe(instructions, task), body=body)


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

"""A task whose contract changed (its schemas or instructions: a new version) stops serving what was learned
under the old one. The promoted student, the approved skill and its drafts, and the field programs they carry were
made from answers to other instructions, so they would go on answering the old way ("write the city in upper
case" added to the docstring, and the student still wrote `Paris`). They leave service when the new version is
registered; skills and programs are written again from the new version's traces, and a student is distilled
again from them. A reviewer who knows the change leaves answers as they were can promote the student again.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("protege")
REVIEWER = "contract change"


def retire_stale(store: Any, skills: Any, task: str, was: int, now: int) -> list[str]:
    """Take the task's student, skills and programs of versions before `now` out of service; what was done."""
    from protege.distill.pipeline import demote

    why = f"the task's contract changed (v{was} → v{now}); learned under v{was}"
    done = []
    if store.promoted_student(task) is not None:
        student = demote(store, task, reason=why)
        done.append(f"student {student.id[:12]} demoted (`protege promote {student.id[:12]}` puts it back)")
    for row in store.skills(task):
        if row.status == "approved":
            skills.retire(task, row.version, by=REVIEWER, note=why)
            done.append(f"skill v{row.version} retired")
        elif row.status == "draft":
            skills.reject(task, row.version, by=REVIEWER, note=why)
            done.append(f"draft skill v{row.version} rejected")
    if done:
        log.warning("task %r: contract changed (v%d → v%d): %s", task, was, now, "; ".join(done))
    return done

"""A small, fully deterministic store for the console's tests, snapshots and docs screenshots.

Every id and timestamp is fixed, so a screen rendered from it is the same on every run and machine.
Two tasks: `triage` (ten days of calls moving from teacher to replay to a promoted student, with escalations,
shadows, three skill versions and labels) and `extract_order` (a few teacher calls, a draft skill, a candidate).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from protege.skills import Skill
from protege.store import LabelRow, RunRow, ShadowRow, SkillRow, Store, StudentRow

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PRICE = {"teacher": 0.0120, "replay": 0.0008, "student": 0.00002}
MODEL = {
    "teacher": "anthropic:claude-opus-4-5",
    "replay": "anthropic:claude-haiku-4-5",
    "student": "local:smollm2-135m+lora",
}
QUEUES = ("billing", "bug", "account", "other")


def trace_id(task: str, i: int, attempt: str | int = 0) -> str:
    """The fixed id of call `i`'s attempt (0, 1, or 's' for the shadow) — hex like a real one."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"trace/{task}/{i}/{attempt}").hex


def run_id(task: str, i: int) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"run/{task}/{i}").hex


def student_id(name: str) -> str:
    """Fixed student ids: 'triage-a', 'triage-b' (promoted), 'extract-a'."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"student/{name}").hex


def seed(store: Store) -> None:
    """Fill an empty store with the fixed fixture data."""
    for name in ("triage", "extract_order"):
        store.register_task(
            name=name,
            contract_hash=f"hash-{name}",
            input_schema={"type": "object"},
            output_schema={"type": "object"},
            instructions=f"Do {name}.",
            policy={},
        )
    traces, runs = _triage_calls()
    traces += _extract_calls(runs)
    for run in runs:
        store.insert_run(run)
    store.insert_traces(traces)
    _shadows(store)
    _skills(store)
    _students(store)
    _labels(store)


def _transcript(i: int, tier: str, queue: str, answer: str) -> list[dict]:
    ticket = (
        f"Ticket #{i}: I was charged twice for order {1000 + i}"
        if queue == "billing"
        else f"Ticket #{i}: the export button crashes the app ({queue})"
    )
    msgs = [
        {"role": "system", "content": "You triage support tickets into a queue with a priority (1 = urgent)."},
        {"role": "user", "content": ticket},
    ]
    if tier == "teacher":
        msgs += [
            {
                "role": "assistant",
                "content": "Let me check the customer's orders.",
                "tool_calls": [{"id": f"call_{i}", "name": "lookup_orders", "arguments": {"order": 1000 + i}}],
            },
            {
                "role": "tool",
                "name": "lookup_orders",
                "tool_call_id": f"call_{i}",
                "content": '{"charges": 2, "status": "paid"}',
            },
        ]
    msgs.append({"role": "assistant", "content": answer})
    return msgs


def _trace(
    tid: str,
    rid: str,
    task: str,
    tier: str,
    attempt: int,
    at: datetime,
    *,
    valid: bool = True,
    queue: str = "billing",
    i: int = 0,
    shadow: bool = False,
) -> dict:
    output = {"queue": queue, "priority": 1 + i % 3} if valid else None
    answer = json.dumps(output) if valid else '{"queue": "billing", "priority": "high"}'
    return {
        "id": tid,
        "run_id": rid,
        "task_name": task,
        "tier": tier,
        "model": MODEL[tier],
        "attempt": attempt,
        "shadow": shadow,
        "skill_version": 2 if tier == "replay" else None,
        "student_id": student_id("triage-b") if tier == "student" else None,
        "input": {"ticket": {"subject": f"#{i}"}},
        "input_hash": f"h{i:04d}",
        "messages": _transcript(i, tier, queue, answer),
        "output": output,
        "output_text": answer,
        "valid": valid,
        "errors": None if valid else ["priority: Input should be a valid integer"],
        "input_tokens": 420 if tier == "teacher" else 300,
        "output_tokens": 60,
        "cost_usd": PRICE[tier],
        "latency_s": {"teacher": 4.2, "replay": 0.9, "student": 0.08}[tier],
        "created_at": at,
    }


def _triage_calls() -> tuple[list[dict], list[RunRow]]:
    """40 calls over ten days: teacher first, then replay (some escalate), then the promoted student."""
    traces, runs = [], []
    for i in range(40):
        at = T0 + timedelta(minutes=round(14400 * (i / 40) ** 0.6))  # busier as the days go by
        rid, queue = run_id("triage", i), QUEUES[i % 4]
        tier = "teacher" if i < 8 else ("replay" if i < 26 else "student")
        escalate = tier == "replay" and i % 6 == 0
        if escalate:  # replay answered badly; the teacher took over in the same run
            traces.append(
                _trace(trace_id("triage", i, 0), rid, "triage", "replay", 0, at, valid=False, i=i, queue=queue)
            )
            traces.append(
                _trace(
                    trace_id("triage", i, 1), rid, "triage", "teacher", 1, at + timedelta(seconds=2), i=i, queue=queue
                )
            )
            served, cost = "teacher", PRICE["replay"] + PRICE["teacher"]
        else:
            traces.append(_trace(trace_id("triage", i, 0), rid, "triage", tier, 0, at, i=i, queue=queue))
            served, cost = tier, PRICE[tier]
        if tier == "replay" and i % 5 == 1:  # a shadow teacher run on the same input
            traces.append(
                _trace(
                    trace_id("triage", i, "s"),
                    rid,
                    "triage",
                    "teacher",
                    0,
                    at + timedelta(seconds=5),
                    i=i,
                    queue=queue,
                    shadow=True,
                )
            )
        runs.append(
            RunRow(
                id=rid,
                task_name="triage",
                input={"ticket": {"subject": f"#{i}"}},
                tier=served,
                status="ok",
                cost_usd=cost,
                latency_s=1.0,
                created_at=at,
                finished_at=at,
            )
        )
    return traces, runs


def _extract_calls(runs: list[RunRow]) -> list[dict]:
    traces = []
    for i in range(4):
        at = T0 + timedelta(days=8, hours=i)
        rid = run_id("extract_order", i)
        traces.append(_trace(trace_id("extract_order", i, 0), rid, "extract_order", "teacher", 0, at, i=i))
        runs.append(
            RunRow(
                id=rid,
                task_name="extract_order",
                tier="teacher",
                status="ok",
                cost_usd=PRICE["teacher"],
                created_at=at,
                finished_at=at,
            )
        )
    return traces


def _shadows(store: Store) -> None:
    for n, i in enumerate(i for i in range(8, 26) if i % 5 == 1):
        store.add_shadow(
            ShadowRow(
                task_name="triage",
                run_id=run_id("triage", i),
                tier="replay",
                trace_id=trace_id("triage", i, 0),
                teacher_trace_id=trace_id("triage", i, "s"),
                agreement=0.0 if n == 2 else 1.0,
                created_at=T0 + timedelta(days=4, hours=n),
            )
        )


SKILL_BODY = """# Triage a support ticket

## Procedure
1. Read the subject and body; find what the customer needs.
2. Pick the queue: `billing` for charges and refunds, `bug` for crashes, `account` for logins.
3. Set priority 1 when money is lost or the app is unusable, else 2 or 3.

## Pitfalls
- A refund request is billing even when it mentions a bug.
"""


def skill_text(task: str, body: str, description: str) -> str:
    name = task.replace("_", "-")
    return Skill(
        name=name,
        description=description,
        body=body,
        metadata={"task": task, "kind": "authored", "model": MODEL["teacher"]},
    ).render()


def _skills(store: Store) -> None:
    d = "Route a support ticket to a queue and set its priority. Use for every incoming ticket."
    v2_body = SKILL_BODY + "- Duplicate charges are priority 1.\n"
    v3_body = v2_body.replace("else 2 or 3", "2 for degraded features, else 3")
    rows = [
        SkillRow(
            task_name="triage",
            name="triage",
            version=1,
            status="retired",
            text=skill_text("triage", SKILL_BODY, d),
            description=d,
            author_model=MODEL["teacher"],
            reviewed_by="alice",
            review_note="superseded by v2",
            reviewed_at=T0 + timedelta(days=3),
            created_at=T0 + timedelta(hours=1),
        ),
        SkillRow(
            task_name="triage",
            name="triage",
            version=2,
            status="approved",
            text=skill_text("triage", v2_body, d),
            description=d,
            author_model=MODEL["teacher"],
            reviewed_by="alice",
            reviewed_at=T0 + timedelta(days=3),
            created_at=T0 + timedelta(days=2, hours=4),
        ),
        SkillRow(
            task_name="triage",
            name="triage",
            version=3,
            status="draft",
            kind="revised",
            text=skill_text("triage", v3_body, d),
            description=d,
            author_model=MODEL["teacher"],
            created_at=T0 + timedelta(days=9),
        ),
        SkillRow(
            task_name="extract_order",
            name="extract-order",
            version=1,
            status="draft",
            text=skill_text(
                "extract_order",
                "# Extract an order\n\n1. Find the order number.\n",
                "Pull the order number and items out of an email.",
            ),
            description="Pull the order number and items out of an email.",
            author_model=MODEL["teacher"],
            created_at=T0 + timedelta(days=8, hours=1),
        ),
    ]
    for row in rows:
        store.add_skill(row)


def _students(store: Store) -> None:
    common = {"base": "smollm2-135m", "adapter_hash": "sha256:0f1e2d"}
    store.add_student(
        StudentRow(
            id=student_id("triage-a"),
            task_name="triage",
            adapter_path=".protege/adapters/triage-a",
            dataset_id="ds-triage-1",
            metrics={"retention": 0.912, "accuracy": 0.874, "latency_s": 0.11, "cost_usd": 0.00003, "n_eval": 80},
            state="candidate",
            created_at=T0 + timedelta(days=5),
            **common,
        )
    )
    store.add_student(
        StudentRow(
            id=student_id("triage-b"),
            task_name="triage",
            adapter_path=".protege/adapters/triage-b",
            dataset_id="ds-triage-2",
            metrics={"retention": 0.968, "accuracy": 0.931, "latency_s": 0.08, "cost_usd": 0.00002, "n_eval": 120},
            state="promoted",
            created_at=T0 + timedelta(days=6),
            promoted_at=T0 + timedelta(days=6, hours=2),
            **common,
        )
    )
    store.add_student(
        StudentRow(
            id=student_id("extract-a"),
            task_name="extract_order",
            adapter_path=".protege/adapters/extract-a",
            metrics={"retention": 0.71, "accuracy": 0.66, "latency_s": 0.09, "cost_usd": 0.00002, "n_eval": 40},
            state="candidate",
            created_at=T0 + timedelta(days=9, hours=3),
            **common,
        )
    )


def _labels(store: Store) -> None:
    with store.session() as s:  # add_label stamps 'now'; fixed times keep the screens deterministic
        s.add(
            LabelRow(
                trace_id=trace_id("triage", 39), verdict="good", reviewer="alice", created_at=T0 + timedelta(days=10)
            )
        )
        s.add(
            LabelRow(
                trace_id=trace_id("triage", 12),
                verdict="bad",
                reviewer="bob",
                note="wrong queue",
                created_at=T0 + timedelta(days=10),
            )
        )
        s.commit()

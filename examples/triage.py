"""Support-ticket triage on protege: a typed task with a tool, called from ordinary app code.

Offline as is: the teacher is a `FunctionModel` playing a careful model — it looks the customer up with the
task's tool, then triages by rules — priced as claude-opus-4-5; replay runs the same rules priced as
claude-haiku-4-5. Switch to real models with environment variables:

    PROTEGE_TEACHER=anthropic:claude-opus-4-5 ANTHROPIC_API_KEY=... python examples/triage.py
    PROTEGE_REPLAY=openai:gpt-4o-mini OPENAI_API_KEY=... python examples/triage.py

Run it from the repository root, then look at what it recorded:

    python examples/triage.py                      # 30 tickets; the skill is approved after the first 10
    protege --app examples.triage:app run triage \
        --input '{"sender": "ana@acme.example", "subject": "Refund", "body": "Charged twice"}'
    protege traces triage    protege trace <id>    protege stats triage    protege tui
"""

from __future__ import annotations

import json
import os
from typing import Literal

from pydantic import BaseModel, Field

from protege import Policy, Protege
from protege.agents import FunctionModel, ModelRequest, ModelResponse, ToolCall, Usage


class Ticket(BaseModel):
    sender: str = Field(description="the customer's email address")
    subject: str
    body: str = ""


class Triage(BaseModel):
    queue: Literal["billing", "bug", "account", "other"]
    priority: int = Field(ge=1, le=4, description="1 = urgent .. 4 = whenever")
    plan: Literal["free", "pro", "enterprise", "unknown"]


# -- the tool: in a real app, your CRM -----------------------------------------------------------------------------

CUSTOMERS = {
    "ana@acme.example": {"plan": "enterprise", "open_incidents": 2},
    "bo@mail.example": {"plan": "free", "open_incidents": 0},
    "chen@startup.example": {"plan": "pro", "open_incidents": 1},
}


def lookup_customer(email: str) -> dict:
    """The customer's plan (free, pro, enterprise) and open incident count, by email address."""
    return CUSTOMERS.get(email.strip().lower(), {"plan": "unknown", "open_incidents": 0})


# -- the offline teacher: what a capable model would do, as code ---------------------------------------------------

KEYWORDS = {"billing": ("refund", "invoice", "charged", "payment"), "bug": ("error", "crash", "broken", "500"),
            "account": ("password", "login", "2fa", "locked")}


def rules_model(req: ModelRequest) -> ModelResponse | dict:
    """First turn: call lookup_customer. Second turn: answer from the tool's result and the ticket's words."""
    ticket = req.task_input["ticket"]
    results = [m.content for m in req.messages if m.role == "tool"]
    if not results:
        call = ToolCall(id="call_1", name="lookup_customer", arguments={"email": ticket["sender"]})
        prompt_chars = sum(len(m.content) for m in req.messages)
        return ModelResponse(tool_calls=[call], usage=Usage(input_tokens=prompt_chars // 4, output_tokens=30))
    customer = json.loads(results[-1])
    text = f"{ticket['subject']} {ticket['body']}".lower()
    queue = next((q for q, words in KEYWORDS.items() if any(w in text for w in words)), "other")
    urgent = customer["plan"] == "enterprise" or "urgent" in text
    return {"queue": queue, "priority": 1 if urgent else 2 if queue == "bug" else 3, "plan": customer["plan"]}


app = Protege(
    teacher=os.environ.get("PROTEGE_TEACHER") or FunctionModel(rules_model, name="function:rules-teacher",
                                                               price_as="anthropic:claude-opus-4-5"),
    replay=os.environ.get("PROTEGE_REPLAY") or FunctionModel(rules_model, name="function:rules-replay",
                                                             price_as="anthropic:claude-haiku-4-5"),
)


@app.task(tools=[lookup_customer], policy=Policy(min_traces=100, shadow_rate=0.1))
def triage(ticket: Ticket) -> Triage:
    """Route a support ticket to a queue (billing, bug, account, other) and set its priority, 1 (urgent) to 4.
    Look the sender up with lookup_customer first: enterprise customers and tickets that say "urgent" get
    priority 1; bugs otherwise 2; everything else 3. Report the customer's plan."""


# -- app code ------------------------------------------------------------------------------------------------------

def sample_tickets(n: int) -> list[Ticket]:
    senders = [*CUSTOMERS, "dee@unknown.example"]
    subjects = ["Refund for invoice {i}", "App shows error {i} on login", "Locked out, password reset fails",
                "Question about the roadmap", "URGENT: checkout broken (order {i})", "Charged twice in March"]
    return [Ticket(sender=senders[i % len(senders)], subject=subjects[i % len(subjects)].format(i=1000 + i),
                   body="Thanks for looking into it.") for i in range(n)]


def main(n: int = 30, approve_after: int = 10) -> None:
    for i, ticket in enumerate(sample_tickets(n), 1):
        result = app.run(triage, {"ticket": ticket})  # or just `triage(ticket)` for the Triage itself
        print(f"{i:3} {ticket.subject[:38]:38} -> {result.output.queue:8} p{result.output.priority} "
              f"[{result.tier}, ${result.cost_usd:.5f}]")
        if i == approve_after:
            app.wait()  # the skill author writes a draft in the background after the teacher's first answer
            skill = app.skill("triage")
            if skill is not None and skill.status == "draft":
                app.approve_skill("triage", reviewer="examples/triage.py")  # a reviewer would read it first
                print(f"    approved skill v{skill.version}: the next calls replay it on the cheap model")
    ledger = app.ledger("triage")
    print(f"\n{ledger.calls} calls, served by {ledger.calls_by_tier}; spent ${ledger.total_usd:.4f} vs "
          f"${ledger.teacher_only_usd or 0:.4f} teacher-only")


if __name__ == "__main__":
    main()

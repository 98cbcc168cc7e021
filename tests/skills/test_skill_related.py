"""Retrieval of related approved skills of other tasks, as prior art for a new task."""

from __future__ import annotations

from protege.skills import Skill

CORPUS = {
    "extract_invoice": (
        "Extract vendor, invoice number, total and due date from an invoice.",
        "# Invoice\n\nFind the vendor in the header, the invoice total at the bottom, the due date.",
    ),
    "extract_order": (
        "Extract ordered items and quantities from an order email.",
        "# Order\n\nList every item with its quantity; ignore the signature.",
    ),
    "triage_ticket": (
        "Route a support ticket to a queue.",
        "# Triage\n\nCrashes go to bug, refunds to billing, logins to account.",
    ),
    "write_poem": ("Write a short poem about the sea.", "# Poem\n\nFour lines, rhyming, waves and gulls."),
    "summarize_meeting": ("Summarize meeting notes into decisions and action items.", "# Summary\n\nDecisions first."),
    "translate_text": ("Translate text from English to German.", "# Translate\n\nKeep names as they are."),
    "classify_sentiment": ("Classify the sentiment of a review.", "# Sentiment\n\npositive, negative or neutral."),
    "detect_language": ("Detect the language of a text.", "# Language\n\nAnswer with an ISO 639-1 code."),
}


def _add(lib, task: str, description: str, body: str, status: str) -> None:
    name = task.replace("_", "-")
    lib.add(task, Skill(name=name, description=description, body=body), kind="authored")
    if status in ("approved", "retired"):
        lib.approve(task, by="ann")
    if status == "retired":
        lib.retire(task, by="ann")


def test_related_ranks_approved_skills_of_other_tasks(lib):
    """The best full-text match comes first; drafts, retired skills and the task's own skill are left out."""
    for task, (description, body) in CORPUS.items():
        _add(lib, task, description, body, "approved")
    _add(lib, "invoice_draft", "Invoice vendor total due date invoice invoice.", "# Invoice vendor total", "draft")
    _add(lib, "invoice_old", "Invoice vendor total due date invoice invoice.", "# Invoice vendor total", "retired")
    _add(lib, "parse_invoice", "Parse an invoice: vendor, total, due date.", "# Invoice vendor total", "approved")

    hits = lib.related("parse_invoice", "extract the vendor and the total due from an invoice", limit=2)
    tasks = [row.task_name for row in hits]
    assert tasks[0] == "extract_invoice"
    assert len(tasks) <= 2 and "write_poem" not in tasks
    assert not {"invoice_draft", "invoice_old", "parse_invoice"} & set(tasks)
    assert all(row.status == "approved" for row in hits)


def test_related_with_nothing_to_match(lib):
    """A blank query or an empty library gives no prior art."""
    assert lib.related("t", "   ") == []
    assert lib.related("t", "invoice vendor") == []

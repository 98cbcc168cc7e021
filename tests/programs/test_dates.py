"""Written dates read as ISO dates (the `date` map), and the input's own date that gives a yearless one its year."""

from __future__ import annotations

import datetime as dt

import pytest

from protege.programs.dates import DATE_MENTION, reference_date, written_date

DECEMBER = dt.date(2024, 12, 13)


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2025-08-03", "2025-08-03"),
        ("2025/8/3", "2025-08-03"),
        ("24.04.2025", "2025-04-24"),
        ("24.04.25", "2025-04-24"),
        ("5 February 2025", "2025-02-05"),
        ("3rd of March", "2025-03-03"),
        ("the 31st of October", "2024-10-31"),
        ("Dec. 5, 2024", "2024-12-05"),
        ("Saturday, January 18", "2025-01-18"),  # a yearless date: the year nearest the input's date
        ("January 24th.", "2025-01-24"),  # trailing punctuation is not the date's
        ("Sat 18 Jan", "2025-01-18"),
        ("December 20", "2024-12-20"),
        ("November 2", "2024-11-02"),  # in the past: nearer than next November
        ("13/04/2025", "2025-04-13"),  # only day/month fits
        ("4/13/2025", "2025-04-13"),  # only month/day fits
    ],
)
def test_a_written_date_reads_as_iso(text, iso):
    assert written_date(text, DECEMBER) == iso


@pytest.mark.parametrize("text", ["03/04/2025", "Feb 30, 2025", "January", "soon", "24th", "January 24th and 25th"])
def test_what_is_not_one_whole_date_is_refused(text):
    """A slashed date whose day and month could swap, a day the month lacks, a month or day alone, two dates."""
    assert written_date(text, DECEMBER) is None


def test_a_yearless_date_without_a_reference_is_refused_and_a_dated_one_is_not():
    assert written_date("January 24th", None) is None
    assert written_date("January 24th, 2026", None) == "2026-01-24"


def test_the_inputs_own_date_is_its_first_leaf_that_is_a_whole_date():
    mail = {"email": {"sender": "Ana <ana@example.com>", "date": "Sat, 08 Nov 2025 11:25:00 +0000", "body": "Hi"}}
    assert reference_date(mail) == dt.date(2025, 11, 8)
    assert reference_date({"sent": "2025-03-01T09:00:00Z", "note": "x"}) == dt.date(2025, 3, 1)
    assert reference_date({"body": "Needed by 5 May 2025, thanks, and a long line of prose after it"}) is None
    assert reference_date({"body": "no date at all"}) is None


def test_date_mentions_are_found_whole_and_not_inside_other_numbers():
    text = (
        "Needed by January 24th.\nDelivered by Saturday, January 18. Delivery date: 24.04.2025\n"
        "On Tue, 20 May 2025 08:26:00 she wrote. Ref ORD-2024-01-05x, version 10.2.3, call 555-1234."
    )
    assert [m.group(0) for m in DATE_MENTION.finditer(text)] == [
        "January 24th",
        "Saturday, January 18",
        "24.04.2025",
        "Tue, 20 May 2025",
    ]

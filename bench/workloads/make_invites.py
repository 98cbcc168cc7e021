"""Generate a count-heavy meeting-invite workload (seeded): attendees as a delimited list in prose, agenda items as
bullets, counts of both never written.

    python bench/workloads/make_invites.py --n 600 --out /tmp/invites.jsonl

Eight output fields: title, date (as written), start (as written), room, organizer, attendees (the names, in
order), attendee_count, agenda_count.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by path from tests
from order_vocab import MONTHS

FIRST = [
    "Ana",
    "Bo",
    "Chiara",
    "Dmitri",
    "Eun-ji",
    "Farah",
    "Gustavo",
    "Hélène",
    "Ivo",
    "Jana",
    "Kofi",
    "Lena",
    "Mateo",
    "Nia",
    "Oskar",
    "Priya",
    "Quentin",
    "Rosa",
    "Søren",
    "Tariq",
]
LAST = ["Lima", "Chen", "Rossi", "Ivanov", "Park", "Haddad", "Silva", "Moreau", "Novak", "Berg", "Mensah", "Nowak"]
TITLES = [
    "Quarterly planning",
    "Design review",
    "Budget sync",
    "Release retro",
    "Hiring panel",
    "Vendor call",
    "Roadmap workshop",
    "Incident review",
]
ROOMS = ["Room 4.12", "Atlas", "the big kitchen", "Zoom", "Oslo office, floor 2", "Meeting room B"]
AGENDA = ["status updates", "open questions", "budget", "next steps", "demo", "risks", "AOB", "timeline"]


def _names(rng: random.Random, k: int) -> list[str]:
    return [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(k)]


def _listed(names: list[str], rng: random.Random) -> str:
    if len(names) == 1:
        return names[0]
    last_sep = rng.choice([" and ", ", and ", " & "])
    return ", ".join(names[:-1]) + last_sep + names[-1]


def one(rng: random.Random) -> dict:
    title, room, organizer = rng.choice(TITLES), rng.choice(ROOMS), _names(rng, 1)[0]
    date = f"{rng.choice(['Monday', 'Tuesday', 'Thursday'])} {rng.randint(1, 28)} {rng.choice(MONTHS)}"
    start = f"{rng.randint(8, 17)}:{rng.choice(['00', '15', '30', '45'])}"
    attendees = _names(rng, rng.choice([1, 2, 2, 3, 3, 4, 5, 6, 8]))
    agenda = rng.sample(AGENDA, rng.randint(0, 5))
    agenda_text = "\n".join(f"- {a}" for a in agenda) if agenda else "(no agenda yet)"
    opener = rng.choice(["Hi all,", "Hello team,", "Dear colleagues,"])
    body = (
        f"{opener}\n\nYou are invited to {title}.\nWhen: {date}, {start}\nWhere: {room}\n"
        f"Attendees: {_listed(attendees, rng)}.\n\nAgenda:\n{agenda_text}\n\n"
        f"{rng.choice(['Thanks,', 'Best,', 'Cheers,'])}\n{organizer}"
    )
    return {
        "input": {"invite": {"subject": f"Invitation: {title}", "body": body}},
        "output": {
            "title": title,
            "date": date,
            "start": start,
            "room": room,
            "organizer": organizer,
            "attendees": attendees,
            "attendee_count": len(attendees),
            "agenda_count": len(agenda),
        },
    }


def generate(n: int, seed: int = 9) -> list[dict]:
    rng = random.Random(seed)
    return [one(rng) for _ in range(n)]


if __name__ == "__main__":
    from jsonl_cli import write_jsonl_main

    write_jsonl_main(generate, __doc__, seed=9)

"""Generate a count-heavy Debian-changelog workload (seeded): top-level change items with nested sub-items, bugs
closed as `Closes: #1, #2` beside Launchpad references that are not, and a maintainer trailer.

    python bench/workloads/make_changelogs.py --n 600 --out /tmp/changelogs.jsonl

Eight output fields: package, version, distribution, urgency, maintainer, email, closes (the bug numbers in
`Closes:` lists, in order), changes (the number of top-level `*` items: never written).
"""

from __future__ import annotations

import random

PACKAGES = ["zlib", "curl", "bash", "vim", "gawk", "sed", "libxml2", "openssl", "nginx", "python3.12", "tzdata"]
DISTS = ["unstable", "experimental", "bookworm-security", "trixie"]
PEOPLE = [
    ("Ana Lima", "ana@debian.org"),
    ("Bo Chen", "bo@example.com"),
    ("Émile Zoë", "emile@debian.org"),
    ("Jürgen Groß", "jg@example.org"),
    ("Siobhán Ní Bhriain", "sio@debian.org"),
]
CHANGES = [
    "New upstream release",
    "Fix FTBFS with GCC 14",
    "Update Standards-Version to 4.7.0",
    "Refresh patches",
    "Drop obsolete Breaks",
    "Add autopkgtest",
    "Fix typo in package description",
    "Build with -O2",
    "Harden the systemd unit",
    "Bump debhelper compat to 13",
]
SUBS = ["Remove the old patch", "Adjust the test suite", "Document it in NEWS", "Thanks to the reporter"]


def one(rng: random.Random) -> dict:
    pkg, dist = rng.choice(PACKAGES), rng.choice(DISTS)
    version = f"{rng.randint(0, 9)}.{rng.randint(0, 30)}-{rng.randint(1, 6)}"
    urgency = rng.choice(["low", "medium", "high"])
    name, email = rng.choice(PEOPLE)
    lines, closes = [], []
    n = rng.choice([1, 1, 2, 2, 3, 3, 4, 5, 6, 8])
    for _ in range(n):
        text = rng.choice(CHANGES)
        r = rng.random()
        if r < 0.35:
            bugs = [rng.randint(100000, 1099999) for _ in range(rng.choice([1, 1, 2, 3]))]
            closes += bugs
            text += " (Closes: " + ", ".join(f"#{b}" for b in bugs) + ")"
        elif r < 0.5:
            text += f" (LP: #{rng.randint(1000000, 2099999)})"
        lines.append(f"  * {text}")
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            lines.append(f"    - {rng.choice(SUBS)}")
    head = f"{pkg} ({version}) {dist}; urgency={urgency}"
    day = rng.randint(1, 28)
    trailer = f" -- {name} <{email}>  Mon, {day:02d} Jan 2024 12:00:00 +0000"
    entry = head + "\n\n" + "\n".join(lines) + "\n\n" + trailer
    return {
        "input": {"entry": entry},
        "output": {
            "package": pkg,
            "version": version,
            "distribution": dist,
            "urgency": urgency,
            "maintainer": name,
            "email": email,
            "closes": closes,
            "changes": n,
        },
    }


def generate(n: int, seed: int = 13) -> list[dict]:
    rng = random.Random(seed)
    return [one(rng) for _ in range(n)]


if __name__ == "__main__":
    from jsonl_cli import write_jsonl_main

    write_jsonl_main(generate, __doc__, seed=13)

"""Generate a Debian-changelog workload with the mess of real entries (seeded): bullets that wrap onto
continuation lines, `[ Name ]` sections of team uploads, nested `-`/`+` sub-items, bugs closed in every form
dpkg accepts (`Closes: #1, #2`, `closes: bug#3`, a list wrapped onto the next line, in sub-items too) beside
numbers that are not closed (`LP: #4`, `see #5`, CVEs), addresses of thanked people before the trailer, and
versions with epochs, `+dfsg`, `~bpo` and `+debNuM` suffixes.

    python bench/workloads/make_debian_changelogs.py --n 900 --out /tmp/debian-changelogs.jsonl

Eight output fields: package, version, distribution, urgency, maintainer and email (of the trailer), closes (the
bugs dpkg would close — its own `Closes:` regex over the entry — first occurrence first, each once), changes (the
number of top-level `*` items: never written).
"""

from __future__ import annotations

import random
import re
import textwrap

from make_changelogs import PEOPLE as CLEAN_PEOPLE  # a sibling script: its folder is on the path, as for jsonl_cli

PACKAGES = [
    "zlib",
    "curl",
    "bash",
    "vim",
    "gawk",
    "sed",
    "libxml2",
    "openssl",
    "nginx",
    "python3.12",
    "tzdata",
    "libreoffice",
    "golang-github-spf13-cobra",
    "node-undici",
    "r-cran-ggplot2",
    "fonts-noto",
    "u-boot",
]
DISTS = [
    "unstable",
    "unstable",
    "unstable",
    "experimental",
    "bookworm-security",
    "bookworm",
    "trixie",
    "bookworm-backports",
    "UNRELEASED",
]
URGENCIES = ["medium", "medium", "medium", "low", "high", "critical", "emergency"]
PEOPLE = [
    *CLEAN_PEOPLE,
    ("Debian Security Team", "team@security.debian.org"),
    ("Kim O'Neill", "kim.oneill+deb@mail.example.net"),
    ("Ravi Shankar Iyer", "ravi@debian.org"),
]
CHANGES = [
    "New upstream release",
    "New upstream version 2.4.1",
    "Fix FTBFS with GCC 14",
    "Update Standards-Version to 4.7.0, no changes needed",
    "Refresh patches for the new upstream release and drop the ones applied upstream",
    "Drop obsolete Breaks/Replaces on packages no longer in any supported release",
    "Add autopkgtest running the upstream test suite against the installed package",
    "Fix typo in package description",
    "debian/rules: build with -O2 and pass the hardening flags to the upstream build system",
    "Harden the systemd unit",
    "Bump debhelper compat to 13",
    "debian/control: add Rules-Requires-Root: no",
    "Fix the *.so symlinks in the -dev package",
    "Team upload",
    "Apply upstream patch for CVE-2024-12345 (heap overflow in the parser)",
    "Remove myself from Uploaders",
]
SUBS = [
    "Remove the old patch",
    "Adjust the test suite to the new API",
    "Document it in NEWS",
    "Thanks to the reporter for the detailed analysis",
    "debian/copyright: update years",
    "Mark the patch Forwarded: not-needed",
]
NOT_CLOSED = ["(LP: #{n})", "(see #{n})", "as reported upstream in bug #{n}", "(Fixes: #{n})"]
CLOSES_FORMS = ["(Closes: {list})", "Closes: {list}", "(closes: {list})", "(Closes: {list}) ", "Closes:{list}"]
DPKG_CLOSES = re.compile(r"closes:\s*(?:bug)?#?\s?\d+(?:,\s*(?:bug)?#?\s?\d+)*", re.IGNORECASE)


def one(rng: random.Random) -> dict:
    pkg, dist, urgency = rng.choice(PACKAGES), rng.choice(DISTS), rng.choice(URGENCIES)
    name, email = rng.choice(PEOPLE)
    sections = [rng.choice(PEOPLE)[0] for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    lines, n_items = [], 0
    for i, who in enumerate(sections):
        if len(sections) > 1:
            lines += ([""] if i else []) + [f"  [ {who} ]"]
        for _ in range(rng.choice([1, 1, 2, 2, 3, 3, 4, 5, 6, 8])):
            n_items += 1
            lines += _wrapped("  * ", _text(rng, CHANGES))
            for _ in range(rng.choice([0, 0, 0, 1, 2, 3])):
                lines += _wrapped(f"    {rng.choice('-+')} ", _text(rng, SUBS), indent="      ")
    version = _version(rng, dist)
    head = f"{pkg} ({version}) {dist}; urgency={urgency}"
    trailer = f" -- {name} <{email}>  {_date(rng)}"
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
            "closes": dpkg_closes(entry),
            "changes": n_items,
        },
    }


def _text(rng: random.Random, choices: list[str]) -> str:
    text = rng.choice(choices)
    r = rng.random()
    if r < 0.3:
        bugs = [rng.randint(100000, 1099999) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        hashes = rng.choice(["#", "#", "#", "bug#", "Bug#"])
        listed = ", ".join(f"{hashes}{b}" for b in bugs)
        text += " " + rng.choice(CLOSES_FORMS).format(list=listed).rstrip()
    elif r < 0.45:
        text += " " + rng.choice(NOT_CLOSED).format(n=rng.randint(100000, 2099999))
    if rng.random() < 0.08:
        thanked, address = rng.choice(PEOPLE)
        text += f". Thanks to {thanked} <{address}>"
    return text


def _wrapped(first: str, text: str, indent: str = "    ") -> list[str]:
    return textwrap.wrap(text, width=78, initial_indent=first, subsequent_indent=indent, break_on_hyphens=False)


def _version(rng: random.Random, dist: str) -> str:
    upstream = f"{rng.randint(0, 9)}.{rng.randint(0, 30)}" + rng.choice(["", "", f".{rng.randint(0, 9)}", "+dfsg"])
    epoch = rng.choice(["", "", "", "", "1:", "2:"])
    revision = f"-{rng.randint(1, 6)}"
    if dist == "bookworm-security" or (dist == "bookworm" and rng.random() < 0.5):
        revision += f"+deb12u{rng.randint(1, 4)}"
    elif dist == "bookworm-backports":
        revision += "~bpo12+1"
    return epoch + upstream + revision


def _date(rng: random.Random) -> str:
    day, hour = rng.randint(1, 28), rng.randint(0, 23)
    weekday, month = rng.choice(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]), rng.choice(["Jan", "Mar", "Oct"])
    return f"{weekday}, {day:02d} {month} 2024 {hour:02d}:{rng.randint(0, 59):02d}:00 {rng.choice(['+0000', '+0100'])}"


def dpkg_closes(entry: str) -> list[int]:
    """The bugs dpkg closes for an entry: first occurrence first, each once."""
    found: list[int] = []
    for match in DPKG_CLOSES.finditer(entry):
        for number in re.findall(r"\d+", match.group(0)):
            if int(number) not in found:
                found.append(int(number))
    return found


def generate(n: int, seed: int = 17) -> list[dict]:
    rng = random.Random(seed)
    return [one(rng) for _ in range(n)]


if __name__ == "__main__":
    from jsonl_cli import write_jsonl_main

    write_jsonl_main(generate, __doc__, seed=17)

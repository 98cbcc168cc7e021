"""Build a workload of *real* Debian changelog entries from the changelogs installed on this machine.

    python bench/workloads/make_real_changelogs.py --n 1200 --out /tmp/real-changelogs.jsonl

Every installed package ships `/usr/share/doc/PKG/changelog.Debian.gz`, written by hundreds of maintainers over
decades: team sections, NMUs, wrapped `Closes:` lists, security uploads, odd indentation. Nothing here was
written for protege, so it tests program induction (and a student) on text its authors never shaped.

The same eight fields as `make_debian_changelogs.py`: package, version, distribution, urgency, maintainer and
email (of the trailer), closes (the bugs dpkg would close, first occurrence first, each once) and changes (the
number of top-level `*` items: bullets at the entry's shallowest bullet indentation). The reference is checked
against `dpkg-parsechangelog` where it is installed: an entry whose header, trailer or closed bugs disagree with
dpkg's reading is left out, so every kept answer is one dpkg agrees with.
"""

from __future__ import annotations

import glob
import gzip
import random
import re
import shutil
import subprocess
from collections.abc import Iterator

from make_debian_changelogs import dpkg_closes  # a sibling script: its folder is on the path, as for jsonl_cli

HEADER = re.compile(
    r"^(?P<package>[a-z0-9][a-z0-9.+-]+) \((?P<version>[^ ()]+)\) (?P<dist>[^;]+); urgency=(?P<urgency>\w+)"
)
TRAILER = re.compile(r"^ -- (?P<name>.+?) <(?P<email>[^<>]+)>  (?P<date>.+)$")
BULLET = re.compile(r"^( +)\* ")
MAX_CHARS = 1500  # longer entries exceed what a small student's context is trained on
PER_PACKAGE = 6  # so a few long-lived packages do not make up the workload


def entries(path: str) -> Iterator[str]:
    """Each entry of one changelog file, header to trailer, as written."""
    with gzip.open(path, "rt", encoding="utf-8", errors="strict") as file:
        lines = file.read().splitlines()
    start = None
    for i, line in enumerate(lines):
        if HEADER.match(line):
            start = i
        elif start is not None and TRAILER.match(line):
            yield "\n".join(lines[start : i + 1])
            start = None


def answer(entry: str) -> dict | None:
    lines = entry.splitlines()
    head, trailer = HEADER.match(lines[0]), TRAILER.match(lines[-1])
    if not head or not trailer:
        return None
    indents = [len(m.group(1)) for line in lines if (m := BULLET.match(line))]
    return {
        "package": head["package"],
        "version": head["version"],
        "distribution": head["dist"].strip(),
        "urgency": head["urgency"].lower(),
        "maintainer": trailer["name"].strip(),
        "email": trailer["email"],
        "closes": dpkg_closes(entry),
        "changes": sum(1 for i in indents if i == min(indents)) if indents else 0,
    }


def agrees_with_dpkg(entry: str, output: dict) -> bool:
    """dpkg-parsechangelog's reading of the entry matches ours (closed bugs as a set: dpkg sorts them)."""
    if not shutil.which("dpkg-parsechangelog"):
        return True
    fields = _rfc822(
        subprocess.run(
            ["dpkg-parsechangelog", "-l", "-", "--format", "rfc822"],
            input=entry + "\n",
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    )
    return (
        fields.get("Source") == output["package"]
        and fields.get("Version") == output["version"]
        and fields.get("Distribution") == output["distribution"]
        and fields.get("Maintainer") == f"{output['maintainer']} <{output['email']}>"
        and sorted(int(n) for n in fields.get("Closes", "").split()) == sorted(output["closes"])
    )


def _rfc822(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and not line.startswith(" "):
            fields[key] = value
    return fields


def generate(n: int, seed: int = 17, pattern: str = "/usr/share/doc/*/changelog.Debian.gz") -> list[dict]:
    rng = random.Random(seed)
    candidates, seen = [], set()
    for path in sorted(glob.glob(pattern)):
        try:
            found = [e for e in entries(path) if len(e) <= MAX_CHARS and e not in seen]
        except (UnicodeDecodeError, OSError, EOFError):
            continue
        rng.shuffle(found)
        for entry in found[:PER_PACKAGE]:
            seen.add(entry)
            candidates.append(entry)
    rng.shuffle(candidates)
    rows = []
    for entry in candidates:
        output = answer(entry)
        if output and agrees_with_dpkg(entry, output):
            rows.append({"input": {"entry": entry}, "output": output})
        if len(rows) == n:
            break
    if len(rows) < n:
        raise SystemExit(f"only {len(rows)} usable changelog entries under {pattern!r}; ask for --n {len(rows)}")
    return rows


if __name__ == "__main__":
    from jsonl_cli import write_jsonl_main

    write_jsonl_main(generate, __doc__, seed=17)

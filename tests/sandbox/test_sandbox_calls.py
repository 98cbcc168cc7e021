"""Ordinary use of the sandbox: answers, failures a program makes by mistake, the import guard, bad arguments,
concurrency, and what the isolation report says."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from protege.errors import UserError
from protege.sandbox import Sandbox, SandboxLimits

ORDER = """
import re
from collections import Counter

def solve(order):
    lines = [l for l in order["text"].splitlines() if re.match(r"\\s*\\d+ x ", l)]
    skus = Counter(re.search(r"SKU-(\\d+)", l).group(1) for l in lines)
    return {"items": len(lines), "skus": sorted(skus), "total": round(sum(
        int(l.split(" x ")[0]) * float(re.search(r"\\$([\\d.]+)", l).group(1)) for l in lines), 2)}
"""


def test_a_program_answers_and_the_worker_is_reused(guarded: Sandbox) -> None:
    order = {"text": "Order 7\n2 x SKU-11 at $3.50\n1 x SKU-4 at $10.00\nthanks"}
    before = guarded.restarts
    results = [guarded.run(ORDER, "solve", {"order": order}) for _ in range(20)]
    assert all(r.ok for r in results)
    assert results[0].value == {"items": 2, "skus": ["11", "4"], "total": 17.0}
    assert guarded.restarts == before and all(r.elapsed_s > 0 for r in results)


def test_isolation_reports_each_layer(guarded: Sandbox) -> None:
    info = guarded.isolation
    assert info["guard"] is True and info["missing"] == []
    assert info["landlock"] >= 1 and info["seccomp"] > 50
    assert {"as", "fsize", "nproc", "cpu"} <= set(info["rlimits"])


@pytest.mark.parametrize(
    ("source", "kind", "words"),
    [
        ("def solve(x):\n    return x / 0\n", "exception", "ZeroDivisionError"),
        ("def solve(x):\n    return {1, 2}\n", "not_json", "set"),
        ("def solve(x):\n    return float('nan')\n", "not_json", "JSON"),
        ("def answer(x):\n    return x\n", "invalid_program", "no function 'solve'"),
        ("def solve(x) return x\n", "invalid_program", "SyntaxError"),
        ("def solve(x):\n    raise SystemExit(2)\n", "exception", "SystemExit"),
        ("def solve(y):\n    return y\n", "exception", "unexpected keyword argument 'x'"),
    ],
    ids=["raises", "set", "nan", "no-entry", "syntax", "exit", "wrong-parameters"],
)
def test_a_broken_program_is_a_failed_call(guarded: Sandbox, serves, source: str, kind: str, words: str) -> None:
    result = guarded.run(source, "solve", {"x": 1})
    assert (result.ok, result.kind) == (False, kind)
    assert words in result.error
    assert not result.restarted
    assert serves(guarded)


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("import os\ndef solve():\n    return 1\n", "'os'"),
        ("from subprocess import run\ndef solve():\n    return 1\n", "'subprocess'"),
        ("def solve():\n    return open('/etc/passwd').read()\n", "NameError"),
        ("def solve():\n    return eval('1')\n", "NameError"),
        ("def solve():\n    return ().__class__.__base__.__subclasses__()\n", "'_' attributes"),
        ("def solve():\n    return getattr((), '__cl' + 'ass__')\n", "'__class__'"),
        ("def solve():\n    return __import__('os')\n", "'__import__'"),
        ("import typing\ndef solve():\n    return str(typing.sys)\n", "sys"),
        ("import json\ndef solve():\n    json.loads = None\n", "read-only"),
        ("import operator, json\ndef solve():\n    return operator.attrgetter('dumps.__globals__')(json)\n", "allowed"),
        ("import operator\ndef solve():\n    return operator.methodcaller('__reduce__')(1)\n", "not allowed"),
        (
            "import string\ndef solve():\n    return string.Formatter().get_field('0.__globals__', [], {})\n",
            "Formatter",
        ),
        ("import typing\ndef solve():\n    return typing.get_type_hints(int)\n", "get_type_hints"),
    ],
    ids=[
        "import-os",
        "from-subprocess",
        "open",
        "eval",
        "dunder",
        "getattr-dunder",
        "dunder-import",
        "module-attribute",
        "patch-module",
        "attrgetter-dunder",
        "methodcaller-dunder",
        "formatter-get-field",
        "get-type-hints-eval",
    ],
)
def test_the_guard_refuses_plain_escapes(guarded: Sandbox, source: str, words: str) -> None:
    result = guarded.run(source)
    assert not result.ok and words in result.error, result


def test_a_dataclass_and_annotations_work_in_a_program(guarded: Sandbox) -> None:
    """Programs compile without the worker's own `from __future__ import annotations` (string annotations broke
    @dataclass: it looks the program's module up in sys.modules)."""
    source = (
        "import dataclasses, operator\n\n@dataclasses.dataclass\nclass Line:\n    qty: int\n    price: float\n\n"
        "def solve(rows):\n"
        "    lines = [Line(**r) for r in rows]\n"
        "    qtys = list(map(operator.attrgetter('qty'), lines))\n"
        "    return {'total': sum(l.qty * l.price for l in lines), 'qtys': qtys}\n"
    )
    result = guarded.run(source, "solve", {"rows": [{"qty": 2, "price": 1.5}, {"qty": 1, "price": 4.0}]})
    assert result.ok, result.error
    assert result.value == {"total": 7.0, "qtys": [2, 1]}


def test_allowed_imports_work_including_dotted_ones(guarded: Sandbox) -> None:
    source = (
        "import collections.abc, urllib.parse\nfrom datetime import datetime\nimport math, json\n\n"
        "def solve(url, day):\n"
        "    q = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)\n"
        "    return {'q': q['a'][0], 'weekday': datetime.strptime(day, '%Y-%m-%d').strftime('%A'),\n"
        "            'is_map': isinstance(q, collections.abc.Mapping), 'pi': round(math.pi, 2)}\n"
    )
    result = guarded.run(source, "solve", {"url": "https://x.example/p?a=1", "day": "2026-12-05"})
    assert result.ok, result.error
    assert result.value == {"q": "1", "weekday": "Saturday", "is_map": True, "pi": 3.14}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("",), "non-empty str"),
        ((b"def solve(): pass",), "non-empty str"),
        (("def solve(): pass", "not a name"), "'not a name'"),
        (("def solve(): pass", "solve", [1]), "[1]"),
        (("def solve(): pass", "solve", {"x": object()}), "JSON data"),
        (("def solve(): pass", "solve", {}, 0), "timeout_s=0"),
        (("def solve(): pass", "solve", {}, True), "timeout_s=True"),
    ],
)
def test_bad_arguments_are_user_errors(guarded: Sandbox, args: tuple, words: str) -> None:
    with pytest.raises(UserError, match=None) as info:
        guarded.run(*args)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"limits": {"memory_mb": 64}}, "SandboxLimits"),
        ({"workers": 0}, "workers=0"),
    ],
)
def test_bad_configuration_is_a_user_error(kwargs: dict, words: str) -> None:
    with pytest.raises(UserError) as info:
        Sandbox(**kwargs)
    assert words in str(info.value)


def test_bad_limits_name_the_value() -> None:
    with pytest.raises(UserError, match=r"memory_mb=16"):
        SandboxLimits(memory_mb=16)


def test_concurrent_calls_from_threads_and_asyncio() -> None:
    source = "def solve(n):\n    return n * n\n"
    with Sandbox(workers=2) as sandbox:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda n: sandbox.run(source, "solve", {"n": n}, timeout_s=5), range(64)))
        assert [r.value for r in results] == [n * n for n in range(64)]

        async def many():
            return await asyncio.gather(*(sandbox.arun(source, "solve", {"n": n}, timeout_s=5) for n in range(16)))

        assert [r.value for r in asyncio.run(many())] == [n * n for n in range(16)]
        assert sandbox.restarts == 0


def test_a_closed_sandbox_refuses_calls() -> None:
    sandbox = Sandbox()
    assert sandbox.run("def solve():\n    return 1\n").value == 1
    sandbox.close()
    with pytest.raises(UserError, match="closed"):
        sandbox.run("def solve():\n    return 1\n")

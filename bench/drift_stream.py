"""A synthetic stream whose inputs shift part-way, for the drift benchmark (bench/drift.py) and
tests/services/test_drift.py.

Layout "a": short English order emails. Layout "b": longer German emails with a field layout a never has — the student
(a FunctionModel standing in for a distilled one) answers "a" right and sure, "b" wrong and less sure.
"""

from __future__ import annotations

import json
import random

from pydantic import BaseModel

from protege.agents.models.base import ModelResponse, Usage

EN = [
    "please",
    "send",
    "order",
    "widgets",
    "invoice",
    "thanks",
    "box",
    "of",
    "the",
    "blue",
    "red",
    "ship",
    "today",
    "need",
    "more",
    "bolts",
    "nuts",
    "for",
    "our",
    "shop",
]
DE = [
    "bitte",
    "senden",
    "sie",
    "uns",
    "die",
    "bestellung",
    "schrauben",
    "muttern",
    "heute",
    "noch",
    "danke",
    "rechnung",
    "kiste",
    "blaue",
    "rote",
    "für",
    "unseren",
    "laden",
    "dringend",
    "lieferung",
]


class Email(BaseModel):
    subject: str
    body: str
    headers: dict[str, str] = {}


class Order(BaseModel):
    item: str
    quantity: int


def make_input(layout: str, rng: random.Random) -> dict:
    qty, words = rng.randint(1, 50), DE if layout == "b" else EN
    item = rng.choice(["widgets", "bolts", "nuts"])
    n = rng.randint(25, 40) if layout == "b" else rng.randint(6, 12)
    body = " ".join(rng.choice(words) for _ in range(n)) + f" {qty} {item}"
    email = {
        "subject": " ".join(rng.choice(words) for _ in range(3)),
        "body": body,
        "headers": {"content-language": "de"} if layout == "b" else {},
    }
    return {"email": email}


def truth(inp: dict) -> dict:
    *_, qty, item = inp["email"]["body"].split()
    return {"item": item, "quantity": int(qty)}


def teacher(req) -> ModelResponse:
    return ModelResponse(text=json.dumps(truth(req.task_input)), usage=Usage(input_tokens=400, output_tokens=20))


def student(req) -> ModelResponse:
    """Right and sure on layout a; on layout b it misreads the quantity, less sure."""
    inp = req.task_input
    rng = random.Random(json.dumps(inp, sort_keys=True))
    answer = truth(inp)
    if inp["email"]["headers"]:
        answer["quantity"] += 1
        return ModelResponse(text=json.dumps(answer), confidence=rng.uniform(0.55, 0.8))
    return ModelResponse(text=json.dumps(answer), confidence=rng.uniform(0.93, 0.99))


def eval_confidences(n: int = 100, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.93, 0.99) for _ in range(n)]

"""Field kinds and answer bounds learned from training traces (`learn_answer_profile`), and the profile stored
with a student."""

from __future__ import annotations

import json

from pydantic import BaseModel
from student_support import chat_row, order_rows

from protege.agents.models.answer_profile import AnswerProfile, kinds_summary, read_profile
from protege.demo.workload import Order
from protege.distill.answer_kinds import MIN_EVIDENCE, learn_answer_profile


class Found(BaseModel):
    customer: str | None
    ref: str
    kind: str
    readings: list[int]
    count: int
    tags: list[str]


def rows(n: int, *, ref_in_input: int | None = None) -> list[dict]:
    """n traces: `customer` and `tags` always copied, `ref` copied in the first `ref_in_input` (else normalized),
    `readings` read from the text (unique), `count` computed, `kind` a label not in the text."""
    out = []
    for i in range(n):
        name = f"Client {chr(65 + i % 26)}{i}"
        text = f"From {name}. Readings {100 + i} and {200 + i}; ref abc{i:04d}; tags red, blue-{i % 3}."
        ref = f"abc{i:04d}" if ref_in_input is None or i < ref_in_input else f"ABC-{i:04d}"
        answer = {
            "customer": name if i % 4 else None,
            "ref": ref,
            "kind": "meter" if i % 2 else "gauge",
            "readings": [100 + i, 200 + i],
            "count": 2,
            "tags": ["red", f"blue-{i % 3}"],
        }
        out.append(chat_row("Read the note.", {"text": text}, answer))
    return out


def test_field_kinds_are_learned_from_what_the_values_were():
    profile = learn_answer_profile(rows(40), Found.model_json_schema())
    assert profile.kinds() == {
        "customer": "copied",
        "ref": "copied",
        "kind": "free",
        "readings": "number",
        "count": "computed",
        "tags": "copied",
    }
    assert profile.fields["customer"].traces == 30  # nulls are no evidence either way
    assert profile.bounds["customer"]["copy"] and profile.bounds["tags[]"]["copy"]
    assert "copy" not in profile.bounds.get("kind", {})
    assert kinds_summary(profile.kinds()) == "copied 3 · number 1 · computed 1 · free 1"


def test_the_copy_threshold_separates_copied_from_normalized_fields():
    """A field copied in 39 of 40 traces (97.5%) is not copied at the default 98%; at 95% it is."""
    schema = Found.model_json_schema()
    assert learn_answer_profile(rows(40, ref_in_input=39), schema).fields["ref"].kind == "free"
    assert learn_answer_profile(rows(40, ref_in_input=39), schema, copy_threshold=0.95).fields["ref"].kind == "copied"


def test_copied_values_edges_are_learned_from_where_they_stand():
    """'Client A0' stands after a space and before '.', tags before ',' and '.': whole words, never mid-word. A
    code cut out of a longer token ('0042' of 'abc0042') needs a word edge on its left, so the rule allows it."""
    profile = learn_answer_profile(rows(40), Found.model_json_schema())
    whole_words = {"left": ["break"], "right": ["break", "joiner"]}
    assert profile.bounds["customer"]["copy_edges"] == whole_words
    assert profile.bounds["tags[]"]["copy_edges"] == whole_words
    cut = [chat_row("Read.", {"text": f"ref abc{i:04d} ok"}, {"ref": f"{i:04d}"}) for i in range(12)]

    class Ref(BaseModel):
        ref: str

    assert learn_answer_profile(cut, Ref.model_json_schema()).bounds["ref"]["copy_edges"]["left"] == ["break", "word"]
    few = learn_answer_profile(rows(MIN_EVIDENCE - 1), Found.model_json_schema())
    assert "copy_edges" not in few.bounds.get("customer", {})


def test_copied_values_that_never_begin_or_end_with_white_space_stay_trimmed():
    profile = learn_answer_profile(rows(40), Found.model_json_schema())
    assert profile.bounds["customer"]["copy_trimmed"] and profile.bounds["tags[]"]["copy_trimmed"]

    class Ref(BaseModel):
        ref: str

    padded = [chat_row("Read.", {"text": f"ref: {i:04d} ok"}, {"ref": f" {i:04d}"}) for i in range(12)]
    assert "copy_trimmed" not in learn_answer_profile(padded, Ref.model_json_schema()).bounds["ref"]
    assert "copy_trimmed" not in learn_answer_profile(rows(MIN_EVIDENCE - 1), Found.model_json_schema()).bounds.get(
        "customer", {}
    )


def test_bounds_are_the_largest_seen_with_a_margin_and_unique_lists_are_noticed():
    profile = learn_answer_profile(rows(40), Found.model_json_schema())
    assert profile.bounds["readings"] == {"max_items": 4, "unique_items": True}  # 2 seen: max(3, 2 + 2)
    longest = max(len(r["output"]["customer"] or "") for r in rows(40))
    assert profile.bounds["customer"]["max_length"] == longest + 16
    assert profile.bounds["count"] == {"max_digits": 3}  # 1 digit seen, 2 more allowed
    assert profile.bounds["readings[]"]["max_digits"] == 5  # 100..239: 3 digits


def test_too_few_traces_learn_no_bound_and_no_kind():
    profile = learn_answer_profile(rows(MIN_EVIDENCE - 1), Found.model_json_schema())
    assert profile.bounds == {}
    assert profile.fields["customer"].kind == "free"


def test_the_longest_answer_sets_the_token_bound(smollm2_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_base)
    data = rows(20)
    longest = max(len(tokenizer(r["messages"][-1]["content"], add_special_tokens=False)["input_ids"]) for r in data)
    profile = learn_answer_profile(data, Found.model_json_schema(), tokenizer=tokenizer)
    assert profile.longest_answer_tokens == longest
    assert profile.max_answer_tokens == int(longest * 1.5 + 0.999) + 16


def test_the_profile_round_trips_through_the_adapter_dir(tmp_path):
    profile = learn_answer_profile(rows(20), Found.model_json_schema(), copy_constraint=False)
    profile.save(tmp_path)
    assert read_profile(tmp_path) == profile
    assert read_profile(tmp_path / "missing") is None and read_profile(None) is None
    assert "copy" not in json.dumps(profile.grammar_bounds())  # the switch off: no copied field
    assert any("copy" in b for b in AnswerProfile(bounds=profile.bounds).grammar_bounds().values())


def test_the_bundled_order_workload_kinds():
    """On the order emails names, products, cities and addresses are verbatim copies (100% of traces); order
    ids are normalized from '#871826' and the like (76%), so they are not constrained; dates are computed."""
    profile = learn_answer_profile(order_rows("pool", 300), Order.model_json_schema())
    kinds = profile.kinds()
    assert {k for k, v in kinds.items() if v == "copied"} == {"customer_name", "product", "city", "contact_email"}
    assert kinds["urgency"] == "enum" and kinds["deliver_by"] == "free" and kinds["order_id"] == "free"

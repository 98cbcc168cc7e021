"""SKILL.md parsing, rendering and the Agent Skills spec rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protege.errors import UserError
from protege.skills.skill import Skill, estimate_tokens, skill_name

FULL = Skill(
    name="extract-order",
    description="Extract an order from an email: items, quantities, totals. Use for order emails.",
    body="# Extract order\n\n## Procedure\n\n1. Find the items.\n\n---\n\nname: not frontmatter\n",
    license="MIT",
    compatibility="Needs nothing but the input text",
    metadata={"task": "extract_order", "protege-version": "3", "protege-status": "approved", "kind": "authored"},
    allowed_tools="Read Bash(git:*)",
    files={"examples/one.md": "# One\r\nkept as is\r\n", "reference.md": "ref"},
)


def test_render_then_parse_round_trips_exactly():
    """A full skill survives render -> parse unchanged, and rendering is canonical (same text twice)."""
    text = FULL.render()
    again = Skill.parse(text, files=FULL.files)
    assert again == FULL
    assert again.render() == text
    assert text.startswith("---\nname: extract-order\ndescription: ")
    assert "\nallowed-tools: Read Bash(git:*)\n---\n\n# Extract order\n" in text


def test_convenience_properties_read_metadata():
    """task, version, status and kind come from metadata; task falls back to the name."""
    assert (FULL.task, FULL.version, FULL.status, FULL.kind) == ("extract_order", 3, "approved", "authored")
    bare = Skill(name="triage-ticket", description="d")
    assert (bare.task, bare.version, bare.status, bare.kind) == ("triage_ticket", None, None, None)


# YAML's troublemakers (line-break look-alikes, quotes, indicators) mixed into arbitrary unicode; no C0 controls
# but tab, LF and CR, nor DEL (skills refuse them: PostgreSQL cannot store NUL).
_CONTROLS = "".join(map(chr, [*range(9), 11, 12, *range(14, 32), 127]))
_chars = st.one_of(
    st.sampled_from(list("\x85\u2028\u2029\r\n\t :#-'\"\ufeff{}[]|>&*!%@`")),
    st.characters(blacklist_categories=("Cs",), blacklist_characters=_CONTROLS),
)
_text = st.text(_chars, max_size=200)


@settings(max_examples=150, deadline=None)
@given(
    name=st.from_regex(r"\A[a-z0-9]{1,10}(-[a-z0-9]{1,10}){0,3}\Z"),
    description=_text.filter(lambda s: s.strip() != ""),
    body=st.text(_chars, max_size=400),
    metadata=st.dictionaries(_text, _text, max_size=4),
    license=st.none() | _text.filter(lambda s: s.strip() != ""),
    allowed=st.none() | _text.filter(lambda s: s.strip() != ""),
)
def test_round_trip_holds_for_arbitrary_text(name, description, body, metadata, license, allowed):
    """parse(render(s)) == s for any valid field values, odd characters and YAML look-alikes included."""
    skill = Skill(
        name=name, description=description, body=body, metadata=metadata, license=license, allowed_tools=allowed
    )
    assert Skill.parse(skill.render()) == skill


@pytest.mark.parametrize(
    "value",
    [
        "a\x85b",
        "d\x85",
        "a\u2028b",
        "x\u2029",
        "a\rb",
        "  lead",
        "trail ",
        "---",
        "k: v",
        "#c",
        "yes",
        "~",
        "null",
        "@x",
        "'q\"",
        "\ufeffx",
        "é ü",
    ],
)
def test_round_trip_holds_for_yaml_troublemakers(value):
    """Values YAML folds, quotes or reads as other types come back exactly (NEL once came back as spaces)."""
    skill = Skill(name="a", description=value, metadata={value: value}, license=value, body=value)
    assert Skill.parse(skill.render()) == skill


@pytest.mark.parametrize("field", ["description", "body", "license", "metadata", "files"])
@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f"])
def test_control_characters_are_refused(field, char):
    """NUL (which PostgreSQL cannot store) and other control characters but tab, LF and CR are a UserError."""
    value = {"metadata": {"k": f"a{char}b"}, "files": {"a.md": f"a{char}b"}}.get(field, f"a{char}b")
    with pytest.raises(UserError, match="control character"):
        Skill(**{"name": "a", "description": "d", field: value}).validate()
    assert Skill(name="a", description="d\tx", body="a\tb\r\nc\n").validate()


def test_hand_written_skill_md_parses():
    """A SKILL.md written by hand (CRLF, BOM, no blank line after the frontmatter) reads correctly."""
    text = "\ufeff---\r\nname: pdf-tools\r\ndescription: Work with PDFs.\r\n---\r\n# PDF\r\nStep one.\r\n"
    skill = Skill.parse(text, folder="pdf-tools")
    assert (skill.name, skill.description, skill.body) == ("pdf-tools", "Work with PDFs.", "# PDF\nStep one.\n")


@pytest.mark.parametrize(
    "task, name",
    [
        ("extract_order", "extract-order"),
        ("Triage", "triage"),
        ("a__b_", "a-b"),
        ("x" * 70, "x" * 64),
        ("v2_parse", "v2-parse"),
        ("Café", "cafe"),  # accents dropped, not the letters: 'caf' before
        ("naïve_résumé", "naive-resume"),
    ],
)
def test_task_names_map_to_spec_names(task, name):
    """Task identifiers become valid spec names: lowercase, single hyphens, at most 64 characters."""
    assert skill_name(task) == name
    Skill(name=name, description="d").validate()


def test_task_name_without_letters_is_refused():
    """A task name with nothing usable cannot name a skill."""
    with pytest.raises(UserError, match="'___'"):
        skill_name("___")


@pytest.mark.parametrize(
    "name", ["", "Extract", "extract_order", "-extract", "extract-", "ex--tract", "x" * 65, "ex tract", "éxtract"]
)
def test_bad_names_are_refused(name):
    """Names must be 1-64 of a-z, 0-9 and single inner hyphens; the error names the value."""
    with pytest.raises(UserError, match="skill name") as err:
        Skill(name=name, description="d").validate()
    assert repr(name) in str(err.value)


def test_longest_legal_name_passes():
    """64 characters is allowed."""
    Skill(name="a" * 64, description="d").validate()


def test_folder_must_equal_name():
    """On import the folder's name must equal the skill's name."""
    with pytest.raises(UserError, match="'other'.*'extract-order'"):
        FULL.validate(folder="other")
    FULL.validate(folder="extract-order")


@pytest.mark.parametrize("description", ["", "   \n", "x" * 1025])
def test_bad_descriptions_are_refused(description):
    """Descriptions are 1-1024 characters of text."""
    with pytest.raises(UserError, match="description"):
        Skill(name="a", description=description).validate()


def test_description_of_1024_characters_passes():
    """The limit itself is allowed."""
    Skill(name="a", description="x" * 1024).validate()


def test_compatibility_limit():
    """compatibility, when given, is 1-500 characters."""
    Skill(name="a", description="d", compatibility="c" * 500).validate()
    for bad in ("", "c" * 501):
        with pytest.raises(UserError, match="compatibility"):
            Skill(name="a", description="d", compatibility=bad).validate()


@pytest.mark.parametrize("key", ["version", "author", "tags", "allowed_tools"])
def test_unknown_frontmatter_keys_are_refused(key):
    """Only name, description, license, compatibility, metadata and allowed-tools may appear."""
    text = f"---\nname: a\ndescription: d\n{key}: x\n---\nbody\n"
    with pytest.raises(UserError, match=f"'{key}' is not allowed"):
        Skill.parse(text)


@pytest.mark.parametrize(
    "meta",
    ["metadata:\n  version: 1\n", "metadata:\n  nested:\n    a: b\n", "metadata: [a, b]\n", "metadata:\n  1: one\n"],
)
def test_metadata_must_map_strings_to_strings(meta):
    """Metadata values and keys are strings (an unquoted YAML number is refused, with a hint to quote it)."""
    with pytest.raises(UserError, match="metadata"):
        Skill.parse(f"---\nname: a\ndescription: d\n{meta}---\nbody\n")


@pytest.mark.parametrize(
    "front",
    [
        "name: a\ndescription: [x]\n",
        "name: a\ndescription: d\nallowed-tools: [Read]\n",
        "name: 12\ndescription: d\n",
        "name: a\ndescription: d\nlicense: 2\n",
    ],
)
def test_frontmatter_values_must_be_strings(front):
    """Scalar fields must be YAML strings (allowed-tools is space-delimited text, not a list)."""
    with pytest.raises(UserError, match="must be a string"):
        Skill.parse(f"---\n{front}---\nbody\n")


@pytest.mark.parametrize(
    "text, rule",
    [
        ("# no frontmatter\n", "must start with"),
        ("---\nname: a\ndescription: d\nbody\n", "no closing"),
        ("---\ndescription: d\n---\nbody\n", "needs `name`"),
        ("---\nname: a\n---\nbody\n", "needs `description`"),
        ("---\n- a\n- b\n---\nbody\n", "must be a YAML mapping"),
        ("---\nname: [a\n---\nbody\n", "not valid YAML"),
    ],
)
def test_malformed_skill_md_is_refused(text, rule):
    """Each structural problem gets its own message."""
    with pytest.raises(UserError, match=rule):
        Skill.parse(text)


def test_body_line_limit():
    """The body stays under 500 lines."""
    Skill(name="a", description="d", body="x\n" * 499).validate()
    with pytest.raises(UserError, match="500 lines"):
        Skill(name="a", description="d", body="x\n" * 500).validate()


def test_body_token_budget():
    """The body stays under ~5,000 tokens (estimated as protege estimates tokens everywhere: count_tokens)."""
    ok = "word " * 4990  # a short word is a token
    assert estimate_tokens(ok) <= 5000
    Skill(name="a", description="d", body=ok).validate()
    with pytest.raises(UserError, match="tokens"):
        Skill(name="a", description="d", body="word " * 5100).validate()


def test_cjk_bodies_are_counted_like_every_other_token_estimate():
    """chars / 4 took 6,000 CJK characters (about a token each) for ~1,500 tokens: 4x under the budget's count."""
    from protege.agents.tokens import count_tokens

    cjk = "注文番号を読み取る。" * 600
    assert estimate_tokens(cjk) == count_tokens(cjk) > 5000
    with pytest.raises(UserError, match="tokens"):
        Skill(name="a", description="d", body=cjk).validate()


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "../x.md",
        "examples/../../x.md",
        "a/b/c.md",
        "a\\b.md",
        ".hidden",
        "examples/.env",
        "C:/x.md",
        "",
        "examples/",
        "SKILL.md",
        "skill.md",
    ],
)
def test_bad_file_paths_are_refused(path):
    """Extra files stay inside the folder, at most one level deep, never hidden or clashing with SKILL.md."""
    with pytest.raises(UserError) as err:
        Skill(name="a", description="d", files={path: "x"}).validate()
    assert repr(path) in str(err.value)


def test_good_file_paths_pass():
    """Top-level files and one folder down are fine."""
    files = {"reference.md": "", "scripts/run.py": "", "examples/SKILL.md": ""}
    Skill(name="a", description="d", files=files).validate()

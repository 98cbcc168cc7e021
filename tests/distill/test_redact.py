"""Redaction: secrets always, personal data only with mode="pii", typed placeholders, no false alarms on real text."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protege.demo.workload import load_examples
from protege.distill.redact import may_need_redaction, redact, redact_json
from protege.errors import UserError

# Each: (text containing a secret, the secret part that must vanish, the placeholder kind expected).
SECRETS = [
    ("ANTHROPIC_API_KEY=sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_xyz", "AbCdEfGhIjKlMnOp", "api_key"),
    ("client = OpenAI(api_key='sk-proj-Abc123Def456Ghi789Jkl012Mno345')", "Abc123Def456", "api_key"),
    ("old style sk-0123456789abcdefghijABCDEFGHIJ0123456789abcd key", "0123456789abcdefghij", "api_key"),
    ("stripe: sk_live_51HxYzAbCdEfGhIjKlMnOp", "51HxYzAbCdEf", "api_key"),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "api_key"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI", "secret"),
    ("maps AIzaSyA1B2C3D4E5F6G7H8I9J0KLMNOPQRSTUVWX ok", "AIzaSyA1B2C3D4E5F6G7H8", "api_key"),
    ("git clone https://ghp_0123456789abcdefghijABCDEFGHIJ012345@github.com/x", "ghp_0123456789abcdefghij", "api_key"),
    ("token github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "11ABCDEFG0123456789", "api_key"),
    ("SLACK_BOT_TOKEN=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "1234567890123-AbCd", "token"),
    (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "SflKxwRJSMeKKF2QT4fw",
        "token",
    ),
    ("curl -H 'Authorization: Bearer abcDEF123456ghiJKL789mno'", "abcDEF123456ghiJKL789mno", "token"),
    ("DATABASE_URL=postgresql://admin:s3cr3t-pw@db.internal:5432/app", "s3cr3t-pw", "credentials"),
    ('{"password": "hunter2!x"}', "hunter2!x", "secret"),
    ("login with PASSWORD: Tr0ub4dor&3", "Tr0ub4dor", "secret"),
    ("--api-key ab12cd34ef56", "ab12cd34ef56", "secret"),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
        "-----END OPENSSH PRIVATE KEY-----\n",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
        "private_key",
    ),
    (
        "truncated -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
        "MIIEowIBAAKCAQEAu1SU1L",
        "private_key",
    ),
]


@pytest.mark.parametrize(("text", "secret", "kind"), SECRETS, ids=[s[2] + str(i) for i, s in enumerate(SECRETS)])
@pytest.mark.parametrize("mode", ["secrets", "pii"])
def test_every_secret_kind_is_redacted_in_both_modes(text, secret, kind, mode):
    """Keys, tokens, private keys, URL credentials and key=value secrets vanish, replaced by a typed placeholder."""
    out, counts = redact(text, mode)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out and counts[kind] >= 1
    assert may_need_redaction(text, mode)


def test_url_credentials_keep_the_host():
    """Only user:password goes; the reader still sees where the URL points."""
    out, _ = redact("redis://user:pa55word@cache.example.com:6379/0")
    assert out == "redis://[REDACTED:credentials]@cache.example.com:6379/0"


def test_secrets_mode_keeps_personal_data():
    """Emails, phone numbers and card numbers stay by default: many tasks exist to extract them."""
    text = (
        "Reach maria.lopez@gmail.com or +1 (415) 555-0132; card 4111 1111 1111 1111; IBAN DE89 3704 0044 0532 0130 00"
    )
    out, counts = redact(text, "secrets")
    assert out == text and not counts


def test_pii_mode_redacts_personal_data_with_checksums():
    """Emails, phones, Luhn-valid cards and mod-97-valid IBANs go; dates, order ids, zips, bad checksums stay."""
    text = (
        "mail maria.lopez@gmail.com, call +44 20 7946 0958 or 617-555-0123. Card 4111-1111-1111-1111, "
        "IBAN GB82 WEST 1234 5698 7654 32. Not a card: 4111 1111 1111 1112. Not an IBAN: GB00WEST12345698765432. "
        "Keep 2024-03-05, 18.08.2024, ORD-482913, order 482913 and Springfield, IL 62704."
    )
    out, counts = redact(text, "pii")
    for gone in ("maria.lopez@gmail.com", "7946 0958", "617-555-0123", "4111-1111-1111-1111", "GB82 WEST"):
        assert gone not in out
    for kept in (
        "4111 1111 1111 1112",
        "GB00WEST12345698765432",
        "2024-03-05",
        "18.08.2024",
        "ORD-482913",
        "order 482913",
        "IL 62704",
    ):
        assert kept in out
    assert counts == {"email": 1, "phone": 2, "card": 1, "iban": 1}


def test_ordinary_words_after_secret_names_are_kept():
    """'token expired' and 'password reset' are prose, not credentials; keys inside words are not keys."""
    text = "Your token expired; use the password reset link. The task-0123456789abcdefghijklmnop id is fine."
    out, counts = redact(text)
    assert out == text and not counts


def test_redact_json_walks_values_and_replaces_secret_named_keys_whole():
    """Nested dicts/lists are walked; a value under 'password'/'api_key'/'authorization' goes whole; input untouched."""
    value = {
        "headers": {"Authorization": "Basic dXNlcjpwYXNz", "Accept": "json"},
        "config": [{"api_key": "short"}, {"note": "key sk-ant-abcdefghijklmnopqrstuvwx"}],
        "n": 3,
        "ok": None,
    }
    before = copy.deepcopy(value)
    out, counts = redact_json(value)
    assert value == before
    assert out["headers"] == {"Authorization": "[REDACTED:secret]", "Accept": "json"}
    assert out["config"] == [{"api_key": "[REDACTED:secret]"}, {"note": "key [REDACTED:api_key]"}]
    assert out["n"] == 3 and out["ok"] is None
    assert counts == {"secret": 2, "api_key": 1}


def test_unknown_mode_is_a_user_error():
    """A typo in the mode names the bad value."""
    with pytest.raises(UserError, match="'PII'"):
        redact("x", "PII")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="'none'"):
        redact_json({}, "none")  # type: ignore[arg-type]


def test_bundled_workload_has_no_false_secrets_and_pii_finds_every_contact():
    """On 1,200 real-looking emails, secrets mode changes nothing; pii mode removes every contact address."""
    examples = load_examples()
    for ex in examples:
        assert redact_json(ex)[0] == ex
    for ex in examples:
        out, _ = redact_json(ex, "pii")
        assert "@" not in str(out["input"]).replace("[REDACTED:email]", "")
        if ex["output"]["contact_email"]:
            assert out["output"]["contact_email"] == "[REDACTED:email]"


KEY_MAKERS = [  # a legacy "sk-" key must start a token ("task-..." is a word), so it gets a space before it
    lambda s: "sk-ant-api03-" + s,
    lambda s: "sk-proj-" + s,
    lambda s: " sk-" + s,
    lambda s: "ghp_" + s.replace("-", "a"),
    lambda s: "xoxp-" + s,
    lambda s: "hf_" + s.replace("-", "b").replace("_", "c"),
    lambda s: "glpat-" + s,
]
TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=32, max_size=48)
AROUND = st.sampled_from(["", " ", "\n", "=", ": ", '"', "'", "(", "[", "<", "key=", "Bearer ", "token: ", "url?k="])
PROSE = st.text(alphabet="abc XYZ.,;\n", max_size=30)


@settings(max_examples=300, deadline=None)
@given(maker=st.sampled_from(KEY_MAKERS), token=TOKEN, before=AROUND, after=AROUND, left=PROSE, right=PROSE)
def test_no_key_survives_in_any_surroundings(maker, token, before, after, left, right):
    """A key of a known format, wherever it sits in text, never survives and the fast path never skips it."""
    key = maker(token)
    text = left + before + key + after + right
    out, _ = redact(text)
    assert token[:24] not in out
    assert may_need_redaction(text)


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("skant-_ABCDEFGHIJKLMNOPQRSTUVWXYZeyJxob:/@=password token 0123456789")),
        max_size=120,
    )
)
def test_fast_path_is_sound(text):
    """Whenever redaction would change a text, `may_need_redaction` says so; redacting twice changes nothing more."""
    if redact(text)[0] != text:
        assert may_need_redaction(text)
    if not may_need_redaction(text):
        assert redact(text)[0] == text
    assert redact(redact(text)[0])[0] == redact(text)[0]


def test_a_clipped_key_after_a_known_prefix_is_redacted_but_not_inside_a_word():
    """`sk-ant-api03-abcdef` (a key cut short in a log line) is under the 16-character minimum and survived; a known
    prefix needs no length. Inside a word (`risk-ant-...`, `desk-proj-...`) it is no key."""
    for key in ("sk-ant-api03-abcdef", "sk-proj-ab12", "sk-svcacct-x", "sk-admin-Z9"):
        assert redact(f"key was {key}, then cut")[0] == "key was [REDACTED:api_key], then cut"
    for word in ("risk-ant-eater", "desk-proj-plan", "the sk-ant- prefix"):
        assert redact(word)[0] == word

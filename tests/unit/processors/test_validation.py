"""Validation beyond Avro: each rule, and that no error ever quotes the value it rejects."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shredline.processors import validation
from shredline.processors.validation import TYPES, InvalidEvent, validate
from shredline.schemas import registry
from shredline.schemas.codec import decode, encode

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def message(**overrides: Any) -> dict[str, Any]:
    event = {
        "type": "message",
        "event_id": "evt-1",
        "tenant": "acme",
        "occurred_at": "2026-11-28T11:59:00Z",
        "channel": "WHATSAPP",
        "direction": "INBOUND",
        "conversation_id": "conv-1",
        "contact_phone": "+5511987654321",
        "contact_name": "Ana Souza",
        "contact_email": "ana@example.com",
        "body": "Oi!",
        "workflow_id": "order-status",
        "closes_conversation": True,
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


def contact(**overrides: Any) -> dict[str, Any]:
    event = {
        "type": "contact",
        "event_id": "evt-2",
        "tenant": "acme",
        "occurred_at": 1795860000000,
        "op": "UPSERT",
        "contact_id": "contact-9",
        "phone": "+34612345678",
        "name": "Lucía",
        "attributes": {"language": "es_ES"},
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


def execution(**overrides: Any) -> dict[str, Any]:
    event = {
        "type": "execution",
        "event_id": "evt-3",
        "tenant": "acme",
        "occurred_at": "2026-11-28T11:00:00+01:00",
        "workflow_id": "lead-qualification",
        "execution_id": "exec-1",
        "status": "FAILED",
        "duration_ms": 1200,
        "log_line": "called Ana at (11) 98765-4321",
        "error": "timeout",
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


def errors_of(event: Any) -> list[str]:
    with pytest.raises(InvalidEvent) as err:
        validate(event, NOW)
    return [str(e) for e in err.value.errors]


def test_valid_events_become_avro_records_with_ordered_keys() -> None:
    m = validate(message(), NOW)
    assert (m.record, m.role, m.key) == ("message_event", "ingest.messages", b"acme:conv-1")
    assert m.value["occurred_at"] == dt.datetime(2026, 11, 28, 11, 59, tzinfo=dt.UTC)
    assert m.value["attachment_count"] == 0
    c = validate(contact(), NOW)
    assert (c.role, c.key) == ("ingest.contacts", b"acme:contact-9")
    e = validate(execution(), NOW)
    assert (e.role, e.key) == ("ingest.executions", b"acme:exec-1")
    assert e.value["occurred_at"] == dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
    assert validate(execution(conversation_id="conv-1"), NOW).key == b"acme:conv-1"
    for valid in (m, c, e):
        assert decode(encode(valid.record, valid.value)) == (valid.record, valid.value)


def test_every_ingest_type_maps_to_the_current_schema_fields() -> None:
    for spec in TYPES.values():
        schema_fields = [f["name"] for f in registry().current(spec.record).parsed["fields"]]
        assert [f.name for f in spec.fields] == schema_fields


SECRET_PHONE = "+55 11 98765-4321"
SECRET_NAME = "Zq9 Maria Secreta"
SECRET_MAIL = "maria.secreta@@example.com"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (message(contact_phone=SECRET_PHONE), "contact_phone: not E.164 (+ then 2-15 digits, no spaces)"),
        (message(contact_phone="+15555550100"), "contact_phone: not a valid phone number"),
        (message(contact_email=SECRET_MAIL), "contact_email: not a valid e-mail address"),
        (message(contact_name=" "), "contact_name: empty"),
        (message(contact_name="x" * 257), "contact_name: longer than 256 characters"),
        (message(body="x" * 4097), "body: longer than 4096 characters"),
        (message(body="a\x00b"), "body: contains a NUL character"),
        (message(body="\ud800"), "body: not valid Unicode (lone surrogate)"),
        (message(body=...), "body: required"),
        (message(body=42), "body: expected a string"),
        (message(tenant="Acme Corp"), "tenant: not a tenant slug (2-63 of a-z 0-9 -)"),
        (message(tenant="acme\n"), "tenant: not a tenant slug (2-63 of a-z 0-9 -)"),
        (message(contact_phone="+5511987654321\n"), "contact_phone: not E.164 (+ then 2-15 digits, no spaces)"),
        (message(contact_email="ana@example.com\n"), "contact_email: not a valid e-mail address"),
        (message(event_id="evt 1"), "event_id: not an id (1-128 of A-Z a-z 0-9 . _ : -)"),
        (message(channel="FAX"), "channel: must be one of WHATSAPP, SMS"),
        (message(channel="UNKNOWN"), "channel: must be one of WHATSAPP, SMS"),
        (message(occurred_at="2026-11-28T11:59:00"), "occurred_at: time has no zone (add Z or +00:00)"),
        (message(occurred_at="2019-12-31T23:59:59Z"), "occurred_at: before 2020-01-01"),
        (message(occurred_at="2026-11-28T12:06:00Z"), "occurred_at: more than 5 minutes in the future"),
        (message(occurred_at="yesterday"), "occurred_at: not an ISO-8601 time"),
        (message(occurred_at=True), "occurred_at: expected an ISO-8601 time with zone, or epoch milliseconds"),
        (message(closes_conversation="yes"), "closes_conversation: expected true or false"),
        (message(attachment_count=33), "attachment_count: must be between 0 and 32"),
        (message(workflow_id="Order Status"), "workflow_id: not a slug (1-64 of a-z 0-9 . _ -)"),
        (message(**{SECRET_NAME: "x"}), "(an unknown field): unknown field"),
        (message(colour="red"), "colour: unknown field"),
        (contact(phone=...), "phone: required for UPSERT"),
        (
            contact(attributes={"nested": {"a": SECRET_NAME}}),
            "attributes: attribute values must be strings (no nesting)",
        ),
        (contact(attributes={SECRET_NAME: "x"}), "attributes: attribute keys must be 1-64 of a-z 0-9 _ . -"),
        (contact(attributes={f"k{i}": "v" for i in range(51)}), "attributes: more than 50 attributes"),
        (execution(duration_ms=-1), "duration_ms: must be between 0 and 86400000"),
        (execution(log_line="x" * 8193), "log_line: longer than 8192 characters"),
        (execution(status="DONE"), "status: must be one of STARTED, SUCCEEDED, FAILED, SKIPPED"),
        ({"type": "payment"}, "type: required, one of message, contact, execution"),
        ([SECRET_NAME], "event: expected a JSON object"),
    ],
)
def test_each_rule_names_the_field_and_never_the_value(event: Any, expected: str) -> None:
    errors = errors_of(event)
    assert expected in errors
    text = " ".join(errors)
    for secret in (SECRET_PHONE, SECRET_NAME, SECRET_MAIL, "98765", "Zq9", "secreta"):
        assert secret not in text


def test_contact_delete_needs_no_personal_fields() -> None:
    assert validate(contact(op="DELETE", phone=..., name=..., attributes=...), NOW).value["phone"] is None


def test_all_problems_are_reported_at_once() -> None:
    errors = errors_of(message(tenant="X", body=..., channel="FAX"))
    assert [e.split(":")[0] for e in errors] == ["tenant", "channel", "body"]


CANARY = "Zq9"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text().map(lambda s: CANARY + s),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text().map(lambda s: CANARY + s), inner, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from(sorted({f.name for t in TYPES.values() for f in t.fields} | {"type"}))


@settings(max_examples=1500)
@given(
    st.dictionaries(field_names | st.text().map(lambda s: CANARY + s), json_values, max_size=14),
    st.sampled_from([*TYPES, None]),
)
def test_validator_never_crashes_and_never_echoes_input(event: dict[str, Any], kind: str | None) -> None:
    if kind is not None:
        event["type"] = kind
    try:
        valid = validate(event, NOW)
    except InvalidEvent as invalid:
        assert CANARY not in str(invalid)
        assert all(CANARY not in str(e) for e in invalid.errors)
    else:
        encode(valid.record, valid.value)  # anything accepted must also encode


@pytest.mark.parametrize(
    ("sent", "canonical"),
    [
        ("+553187654321", "+5531987654321"),  # issue 15: Brazilian WhatsApp id without the ninth digit
        ("+5215512345678", "+525512345678"),  # issue 15: Mexican WhatsApp id with the old mobile 1
        ("+552199876543", "+5521999876543"),
        ("+556196543210", "+5561996543210"),
        ("+5218112345678", "+528112345678"),
        ("+5213312345678", "+523312345678"),
        ("+5531987654321", "+5531987654321"),  # already canonical
        ("+551133334444", "+551133334444"),  # a Brazilian landline: 8 digits, kept
        ("+525512345678", "+525512345678"),
        ("+34612345678", "+34612345678"),
        ("+\uff15\uff1511987654321", "+5511987654321"),  # full-width digits: NFKC gives ASCII
    ],
)
def test_whatsapp_phone_forms_are_accepted_and_made_canonical(sent: str, canonical: str) -> None:
    assert validate(message(contact_phone=sent), NOW).value["contact_phone"] == canonical
    assert validate(contact(phone=sent), NOW).value["phone"] == canonical


@pytest.mark.parametrize(
    ("phone", "reason"),
    [
        ("+5511987654\u0663\u0662\u0661", "not ASCII (digits must be 0-9)"),  # issue 15: Arabic-Indic digits
        ("+55119876543\u0968\u0967", "not ASCII (digits must be 0-9)"),  # Devanagari
        ("+55\u06f1\u06f1987654321", "not ASCII (digits must be 0-9)"),  # Persian
        ("+5511987654321\u200b", "not ASCII (digits must be 0-9)"),  # zero-width space
        ("+552112345678", "not a valid phone number"),  # 8 digits starting 1: no mobile, no landline
        ("+52155123456", "not a valid phone number"),  # too short after the 1
    ],
)
def test_phones_must_be_ascii_and_valid(phone: str, reason: str) -> None:
    assert errors_of(message(contact_phone=phone)) == [f"contact_phone: {reason}"]


@pytest.mark.parametrize(
    ("email", "normalised"),
    [
        ("joão.teste@exemplo.com.br", "joão.teste@exemplo.com.br"),  # issue 15
        ("ana.fake@exámple-test.com", "ana.fake@exámple-test.com"),  # issue 15
        ("Ana.Souza@EXAMPLE.com", "Ana.Souza@example.com"),
        ("jose\u0301@example.com", "josé@example.com"),  # NFD local part: NFC
        ("maria+vip@exemplo.com.br", "maria+vip@exemplo.com.br"),
        ("lucía@correo.es", "lucía@correo.es"),
        ("o'brien@example.org", "o'brien@example.org"),
    ],
)
def test_internationalised_emails_are_accepted_and_normalised(email: str, normalised: str) -> None:
    assert validate(execution(contact_email=email), NOW).value["contact_email"] == normalised


@pytest.mark.parametrize(
    "email", ["ana@", "@example.com", "ana@@example.com", "ana@example", "ana souza@example.com", "ana@exa mple.com"]
)
def test_invalid_emails_are_rejected(email: str) -> None:
    assert errors_of(message(contact_email=email)) == ["contact_email: not a valid e-mail address"]


VERDICT_CASES = [
    ("contact_email", "ana@example.com"),  # valid as written
    ("contact_email", "Ana.Souza@EXAMPLE.com"),  # valid, normalised
    ("contact_email", "jose\u0301@example.com"),  # valid, NFC
    ("contact_email", "ana@@example.com"),  # invalid
    ("contact_phone", "+5511987654321"),  # valid as written
    ("contact_phone", "+553187654321"),  # valid, legacy form
    ("contact_phone", "+15555550100"),  # invalid
]


def outcome(field: str, value: str) -> str:
    try:
        return str(validate(message(**{field: value}), NOW).value[field])
    except InvalidEvent as invalid:
        return str(invalid)


@pytest.mark.parametrize(("field", "value"), VERDICT_CASES)
def test_cached_verdicts_give_what_a_first_check_gives(field: str, value: str) -> None:
    validation.forget_verdicts()
    first = outcome(field, value)
    assert outcome(field, value) == outcome(field, value) == first


def test_verdict_caches_hold_no_phone_or_address_and_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "_VERDICTS_MAX", 4)
    validation._email_verdicts.clear()
    for n in range(10):
        outcome("contact_email", f"ana{n}@example.com")
        assert len(validation._email_verdicts) <= 4
    for field, value in VERDICT_CASES:
        outcome(field, value)
    for verdicts in (validation._email_verdicts, validation._phone_verdicts):  # digests and verdicts only
        assert verdicts and all(len(d) == 16 and v in (True, False, None) for d, v in verdicts.items())


@settings(max_examples=300)
@given(
    st.sampled_from(["ana", "Ana", "jos\u00e9", "jose\u0301", "a b", "a..b", "", "o'brien", "x+y"]),
    st.sampled_from(["@", "@@", ""]),
    st.sampled_from(["example.com", "EXAMPLE.com", "ex\u00e1mple.com", "example", "exa mple.com", ""]),
)
def test_an_address_seen_again_gets_the_same_outcome(local: str, at: str, domain: str) -> None:
    address = local + at + domain
    validation._email_verdicts.clear()
    first = outcome("contact_email", address)
    assert outcome("contact_email", address) == first

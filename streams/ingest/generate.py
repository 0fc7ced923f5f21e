"""`shredline generate`: realistic synthetic events as JSON lines, deterministic for a seed.

Each tenant speaks one locale (Brazilian Portuguese, Spanish, English) and has contacts with
Faker names, `example.*` e-mails and valid mobile numbers of its country. Conversations on
WhatsApp or SMS alternate inbound and outbound turns and usually close; contacts are created,
updated and sometimes deleted; workflow executions log lines that mention the contact's name,
phone (written the ways people write them) and e-mail, so redaction has real work to do.

Output is the same for the same `seed`, `start` and `span` (and the same Faker version).
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import phonenumbers
from faker import Faker
from phonenumbers import PhoneNumberFormat, PhoneNumberType

LOCALES = (("pt_BR", "BR"), ("es_ES", "ES"), ("en_US", "US"))
WORKFLOWS = ("order-status", "appointment-booking", "lead-qualification", "payment-reminder", "support-triage")
FEATURES = ("llm-reply", "crm-lookup", "calendar", "payments", "human-handoff", "translation")
STEPS = ("receive", "classify", "lookup", "respond", "notify")

INBOUND = {
    "pt_BR": [
        "Oi, tudo bem? Queria saber do meu pedido {order}",
        "Meu nome é {name}, pode me ajudar?",
        "Pode me ligar no {phone}?",
        "Manda a confirmação para {email} por favor",
        "Obrigado!",
        "Qual o horário de atendimento amanhã?",
        "Quero remarcar minha consulta para sexta",
    ],
    "es_ES": [
        "Hola, ¿qué tal? Quería saber de mi pedido {order}",
        "Me llamo {name}, ¿me pueden ayudar?",
        "¿Me pueden llamar al {phone}?",
        "Enviad la confirmación a {email}, por favor",
        "¡Gracias!",
        "¿A qué hora abren mañana?",
        "Quiero cambiar mi cita al viernes",
    ],
    "en_US": [
        "Hi, any news on my order {order}?",
        "This is {name}, can you help me?",
        "Can you call me at {phone}?",
        "Please send the confirmation to {email}",
        "Thanks!",
        "What time do you open tomorrow?",
        "I'd like to move my appointment to Friday",
    ],
}
OUTBOUND = {
    "pt_BR": [
        "Olá {first}! Seu pedido {order} saiu para entrega.",
        "Claro, {first}. Posso ajudar com mais algo?",
        "Sua consulta foi confirmada para {day}.",
        "Enviamos o comprovante para o seu e-mail.",
    ],
    "es_ES": [
        "¡Hola {first}! Tu pedido {order} está en camino.",
        "Claro, {first}. ¿Algo más?",
        "Tu cita quedó confirmada para el {day}.",
        "Te hemos enviado el justificante por correo.",
    ],
    "en_US": [
        "Hi {first}! Your order {order} is on its way.",
        "Sure, {first}. Anything else?",
        "Your appointment is confirmed for {day}.",
        "We've emailed you the receipt.",
    ],
}
LOGS = [
    "sent reminder to {name} at {phone}",
    "CRM lookup for {email} returned 1 match",
    "handoff requested by {name} ({phone})",
    "delivery receipt for {phone} ok",
    "calendar slot booked for {name} <{email}>",
    "retrying webhook for contact {phone}",
    "model reply generated in {ms} ms",
    "classified intent=order_status confidence=0.93",
]
ERRORS = [
    "timeout calling CRM for {email}",
    "invalid address for {name}",
    "carrier rejected {phone}",
    "upstream 503 after 3 retries",
]


@dataclass
class _Contact:
    contact_id: str
    name: str
    email: str
    phone: phonenumbers.PhoneNumber
    created: bool = False

    @property
    def e164(self) -> str:
        return phonenumbers.format_number(self.phone, PhoneNumberFormat.E164)


def _as_people_write_it(number: phonenumbers.PhoneNumber, rng: random.Random) -> str:
    """A phone number the way a person types it: spaces, dashes, brackets, often no country code."""
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    digits = re.sub(r"\D", "", national)
    return rng.choice(
        [
            phonenumbers.format_number(number, PhoneNumberFormat.E164),
            phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL),
            national,
            digits,
            "-".join(re.findall(r"\d{1,4}", digits)),
        ]
    )


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Tenant:
    """One tenant's event stream, in time order."""

    def __init__(self, index: int, seed: int, start: dt.datetime, span: dt.timedelta, events: int) -> None:
        self.locale, self.region = LOCALES[index % len(LOCALES)]
        self.rng = random.Random(seed * 7919 + index)  # noqa: S311 - synthetic data, not security
        self.fake = Faker(self.locale)
        self.fake.seed_instance(seed * 7919 + index)
        company = re.sub(r"[^a-z0-9]+", "-", self.fake.company().lower()).strip("-")[:24].strip("-")
        self.tenant = f"{company or 'tenant'}-{index + 1}"
        self.start = start
        # ~14 events per conversation on average; plan for 7 so the span holds twice what is asked.
        self.mean_gap_s = span.total_seconds() / max(1, events / 7)
        self.end = start + span
        self.contacts: list[_Contact] = []
        self.counter = 0

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.tenant}-{self.counter:08d}"

    def _phone(self) -> phonenumbers.PhoneNumber:
        example = phonenumbers.example_number_for_type(self.region, PhoneNumberType.MOBILE)
        assert example is not None, self.region
        national = str(example.national_number)
        while True:
            digits = national[:-6] + "".join(str(self.rng.randrange(10)) for _ in range(6))
            number = phonenumbers.parse(f"+{example.country_code}{digits}", None)
            if phonenumbers.is_valid_number(number):
                return number

    def _contact(self) -> _Contact:
        if self.contacts and self.rng.random() < 0.35:
            return self.rng.choice(self.contacts)
        contact = _Contact(self._id("contact"), self.fake.name(), self.fake.safe_email(), self._phone())
        self.contacts.append(contact)
        return contact

    def _base(self, kind: str, when: dt.datetime) -> dict[str, Any]:
        return {"type": kind, "event_id": self._id("evt"), "tenant": self.tenant, "occurred_at": _iso(when)}

    def _fill(self, template: str, contact: _Contact) -> str:
        return template.format(
            name=contact.name,
            first=contact.name.split()[0],
            email=contact.email,
            phone=_as_people_write_it(contact.phone, self.rng),
            order=f"#{self.rng.randrange(10000, 99999)}",
            day=self.fake.day_of_week(),
            ms=self.rng.randrange(80, 4000),
        )

    def conversation(self, when: dt.datetime) -> list[dict[str, Any]]:
        contact = self._contact()
        events: list[dict[str, Any]] = []
        if not contact.created or self.rng.random() < 0.1:
            upsert = self._base("contact", when)
            upsert.update(
                op="UPSERT",
                contact_id=contact.contact_id,
                phone=contact.e164,
                name=contact.name,
                email=contact.email,
                attributes={"source": self.rng.choice(["whatsapp", "sms", "web"]), "language": self.locale},
            )
            events.append(upsert)
            contact.created = True
        conversation_id = self._id("conv")
        channel = "WHATSAPP" if self.rng.random() < 0.7 else "SMS"
        workflow = self.rng.choice(WORKFLOWS)
        turns = self.rng.randint(2, 12)
        closes = self.rng.random() < 0.8
        for turn in range(turns):
            when += dt.timedelta(seconds=self.rng.uniform(2, 90))
            inbound = turn % 2 == 0
            message = self._base("message", when)
            message.update(
                channel=channel,
                direction="INBOUND" if inbound else "OUTBOUND",
                conversation_id=conversation_id,
                contact_phone=contact.e164,
                contact_name=contact.name,
                contact_email=contact.email,
                body=self._fill(self.rng.choice((INBOUND if inbound else OUTBOUND)[self.locale]), contact),
                workflow_id=workflow,
                agent_id=f"agent-{workflow}",
                opens_conversation=turn == 0,
                closes_conversation=closes and turn == turns - 1,
                attachment_count=1 if self.rng.random() < 0.05 else 0,
            )
            events.append(message)
            if not inbound:
                events.extend(self._execution(when, workflow, conversation_id, contact))
        if self.rng.random() < 0.03:
            delete = self._base("contact", when + dt.timedelta(minutes=5))
            delete.update(op="DELETE", contact_id=contact.contact_id)
            events.append(delete)
            self.contacts.remove(contact)
        return events

    def _execution(
        self, when: dt.datetime, workflow: str, conversation_id: str, contact: _Contact
    ) -> list[dict[str, Any]]:
        execution_id = self._id("exec")
        out = []
        for step in self.rng.sample(STEPS, self.rng.randint(1, 3)):
            failed = self.rng.random() < 0.05
            event = self._base("execution", when)
            event.update(
                workflow_id=workflow,
                execution_id=execution_id,
                step=step,
                feature_id=self.rng.choice(FEATURES),
                status="FAILED" if failed else "SUCCEEDED",
                duration_ms=int(self.rng.lognormvariate(6, 1.2)),
                log_line=self._fill(self.rng.choice(LOGS), contact),
                conversation_id=conversation_id,
                contact_phone=contact.e164,
                contact_name=contact.name,
                contact_email=contact.email,
            )
            if failed:
                event["error"] = self._fill(self.rng.choice(ERRORS), contact)
            out.append(event)
            when += dt.timedelta(milliseconds=event["duration_ms"] + 5)
        return out

    def events(self) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """Events sorted by time: conversations overlap, so a small heap reorders them."""
        pending: list[tuple[str, int, dict[str, Any]]] = []
        seq = 0
        when = self.start
        while when < self.end:
            for event in self.conversation(when):
                if event["occurred_at"] < _iso(self.end):
                    heapq.heappush(pending, (event["occurred_at"], seq, event))
                    seq += 1
            when += dt.timedelta(seconds=self.rng.expovariate(1 / self.mean_gap_s))
            cutoff = _iso(when)
            while pending and pending[0][0] <= cutoff:
                yield heapq.heappop(pending)
        while pending:
            yield heapq.heappop(pending)


def default_start(now: dt.datetime, span: dt.timedelta) -> dt.datetime:
    """Midnight UTC today minus the span: the data ends before now, so it is never 'in the future'."""
    midnight = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - span


def generate(tenants: int, events: int, seed: int, start: dt.datetime, span: dt.timedelta) -> Iterator[dict[str, Any]]:
    """`events` synthetic events over `tenants` tenants, in time order."""
    per_tenant = max(1, events // max(1, tenants))
    streams = [_Tenant(i, seed, start, span, per_tenant).events() for i in range(tenants)]
    for count, (_when, _seq, event) in enumerate(heapq.merge(*streams, key=lambda e: (e[0], e[1]))):
        if count >= events:
            return
        yield event

import logging

import pytest

from shredline.streams.processing.repeats import RepeatFilter, quiet_repeats


def record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


FETCH_FAILED = "Failed fetch messages from %s: %s"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_record_per_template_and_interval_passes_and_the_next_says_how_many_were_held() -> None:
    clock = Clock()
    quiet = RepeatFilter(10.0, clock)
    template = "Unable connect to node with id %s: %s"
    assert quiet.filter(record("aiokafka", template, 1, "refused"))
    passed = [quiet.filter(record("aiokafka", template, 1, "refused")) for _ in range(500)]
    assert not any(passed)
    clock.now += 10.0
    late = record("aiokafka", template, 1, "refused")
    assert quiet.filter(late)
    assert late.getMessage() == "Unable connect to node with id 1: refused (500 similar held back in the last 10s)"
    clock.now += 10.0
    quiet_again = record("aiokafka", template, 1, "refused")
    assert quiet.filter(quiet_again)
    assert quiet_again.getMessage() == "Unable connect to node with id 1: refused"  # nothing held since


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("aiokafka", "Unable connect to node with id %s: %s"), ("aiokafka", "Unable to update metadata from %s")),
        (
            ("aiokafka", "Failed fetch messages from %s: %s"),
            ("aiokafka.consumer.fetcher", "Failed fetch messages from %s: %s"),
        ),
    ],
)
def test_templates_and_loggers_are_limited_apart(first: tuple[str, str], second: tuple[str, str]) -> None:
    quiet = RepeatFilter(10.0, Clock())
    assert quiet.filter(record(first[0], first[1], 1, "x"))
    assert quiet.filter(record(second[0], second[1], 1, "x"))


LIBRDKAFKA = "%s [%s] %s"  # how confluent-kafka hands librdkafka's lines to a Python logger


def test_librdkafka_facilities_are_limited_apart_and_each_one_is_limited() -> None:
    quiet = RepeatFilter(10.0, Clock())
    name = "shredline.librdkafka"
    assert quiet.filter(record(name, LIBRDKAFKA, "FAIL", "rdkafka#producer-1", "Connect to broker failed"))
    assert not quiet.filter(record(name, LIBRDKAFKA, "FAIL", "rdkafka#producer-2", "Connect to broker failed"))
    # a different facility is a different kind: the flood above does not hold it back
    assert quiet.filter(record(name, LIBRDKAFKA, "ERROR", "rdkafka#producer-1", "Topic authorization failed"))
    assert not quiet.filter(record(name, LIBRDKAFKA, "ERROR", "rdkafka#producer-1", "Topic authorization failed"))
    # a template that does not start with its argument is keyed by the template alone
    assert quiet.filter(record(name, "node %s down", "1"))
    assert not quiet.filter(record(name, "node %s down", "2"))


def test_installing_twice_keeps_one_filter() -> None:
    name = "tests.repeats.idempotent"
    quiet_repeats((name,))
    quiet_repeats((name,))
    assert sum(isinstance(f, RepeatFilter) for f in logging.getLogger(name).filters) == 1

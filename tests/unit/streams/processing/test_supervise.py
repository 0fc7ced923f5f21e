"""The worker's watchdog decision (`stalled`), at times the test chooses (monotonic seconds)."""

from __future__ import annotations

from shredline.streams.processing.supervise import stalled

STALL_S = 90.0
START = 5000.0


def test_nothing_stalls_while_everything_moves_within_the_limit() -> None:
    last = {"the heartbeat timer": START, "SplitLoop": START, "ControlLoop": START}
    assert stalled(START + STALL_S, last, STALL_S, stopping=False) is None  # silent for exactly the limit: not yet


def test_a_loop_that_has_not_moved_on_stalls_the_worker_though_the_heartbeat_runs() -> None:
    now = START + STALL_S + 1
    last = {"the heartbeat timer": now - 1, "SplitLoop": START, "ControlLoop": now}  # Faust's timer and control go on
    assert stalled(now, last, STALL_S, stopping=False) == ("SplitLoop", STALL_S + 1)


def test_the_longest_silent_is_named_and_a_silent_heartbeat_stalls_as_before() -> None:
    last = {"the heartbeat timer": START - 30, "SplitLoop": START - 10, "ControlLoop": START}
    assert stalled(START + STALL_S, last, STALL_S, stopping=False) == ("the heartbeat timer", STALL_S + 30)


def test_the_watchdog_stands_down_once_a_clean_stop_began() -> None:
    last = {"the heartbeat timer": START, "SplitLoop": START}
    assert stalled(START + 10 * STALL_S, last, STALL_S, stopping=True) is None
    assert stalled(START + 10 * STALL_S, {}, STALL_S, stopping=False) is None

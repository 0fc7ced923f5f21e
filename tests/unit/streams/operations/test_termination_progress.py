"""Which recorded termination progress the key store contradicts (pure)."""

import pytest

from shredline.keystore.store import TERMINATED, TenantRow
from shredline.streams.operations.termination import progress_contradiction

LIVE = TenantRow("acme", "active", 1, 1, b"n" * 12, b"wrapped root", 86_400, 0.0)
GONE = TenantRow("acme", TERMINATED, 1, None, None, None, 86_400, 0.0, terminated_at=1.0)
DESTROYED = [("k1", "conversation"), ("k2", "conversation"), ("k3", "contact")]


def progress(**steps: dict[str, object]) -> dict[str, object]:
    return {"tenant": "acme", "generation": 1, "operator": "User:operator", "reason": "r", "steps": steps}


def test_progress_the_store_bears_out_holds() -> None:
    assert progress_contradiction(progress(), LIVE, []) is None
    assert progress_contradiction(progress(intent={}), LIVE, []) is None
    assert progress_contradiction(progress(intent={}, keys={"conversation": 2, "contact": 1}), GONE, DESTROYED) is None
    assert progress_contradiction(progress(keys={"conversation": 1}), GONE, DESTROYED) is None  # some were earlier


@pytest.mark.parametrize(
    ("state", "row", "destroyed", "problem"),
    [
        (progress(keys={}), LIVE, [], "its keys step is recorded as done, but the tenant is active"),
        (progress(keys={}, certificate={}), LIVE, [], "but the tenant is active with its root key in the store"),
        (
            progress(keys={"conversation": 4242}),
            GONE,
            DESTROYED,
            "claims 4242 conversation keys destroyed where the store records 2",
        ),
        (progress(keys={"contact": 2}), GONE, DESTROYED, "claims 2 contact keys destroyed where the store records 1"),
        ({**progress(), "tenant": "other"}, LIVE, [], "another tenant or generation"),
        ({**progress(), "generation": 2}, LIVE, [], "another tenant or generation"),
    ],
)
def test_progress_the_store_contradicts_is_named(
    state: dict[str, object], row: TenantRow, destroyed: list[tuple[str, str]], problem: str
) -> None:
    found = progress_contradiction(state, row, destroyed)
    assert found is not None and problem in found

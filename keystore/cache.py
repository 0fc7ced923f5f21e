"""A bounded in-process cache of unwrapped keys with a staleness bound.

An entry older than `staleness_s` is re-checked against the store before use, so a key
destroyed by another process stops working here within that bound even if no termination
event arrives; `evict_tenant` makes it immediate. Entries hold key objects (`DataKey`,
`TenantKeys`...) that never show their bytes.
Safe across threads (the worker seals in a thread while its control task evicts on the loop).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass
class Entry(Generic[V]):
    value: V
    tenant: str
    checked_at: float
    budget: int = 0  # for sealing keys: encryptions still reserved for this process
    expiry_written: float = 0.0  # for conversation keys: the expiry last stored


class BoundedCache(Generic[V]):
    def __init__(self, max_entries: int, staleness_s: float, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[Hashable, Entry[V]] = OrderedDict()
        self.max_entries = max_entries
        self.staleness_s = staleness_s
        self._clock = clock
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[Entry[V] | None, bool]:
        """The entry and whether it is still fresh (a stale one must be re-checked)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None, False
            self._entries.move_to_end(key)
        return entry, self._clock() - entry.checked_at <= self.staleness_s

    def put(self, key: Hashable, value: V, tenant: str, budget: int = 0, expiry_written: float = 0.0) -> Entry[V]:
        entry = Entry(value, tenant, self._clock(), budget, expiry_written)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return entry

    def refreshed(self, entry: Entry[V]) -> None:
        entry.checked_at = self._clock()

    def drop(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def evict_tenant(self, tenant: str) -> int:
        with self._lock:
            doomed = [k for k, e in self._entries.items() if e.tenant == tenant]
            for k in doomed:
                del self._entries[k]
        return len(doomed)

    def stale_all(self) -> None:
        """Every entry must be re-checked against the store before its next use."""
        with self._lock:
            for entry in self._entries.values():
                entry.checked_at = float("-inf")

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"BoundedCache(entries={len(self._entries)}, staleness_s={self.staleness_s})"

"""A bounded in-process cache with a time to live, counting hits and misses: the
processors' users and templates, the send API's known ids, verified keys and header
parameters."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")
_MISSING = object()


class TTLCache(Generic[V]):
    """LRU-bounded, entries expire `ttl` seconds after they were stored.

    Only used from the event loop's thread, so it needs no lock.
    """

    def __init__(
        self, max_entries: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._data: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl
        self._clock = clock
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        item = self._data.get(key)
        if item is None or item[0] <= self._clock():
            if item is not None:
                del self._data[key]
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return item[1]

    def put(self, key: Hashable, value: V) -> None:
        self._data[key] = (self._clock() + self._ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:
        return self.get(key) is not None

    def invalidate(self, key: Hashable) -> None:
        self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)

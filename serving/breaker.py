"""A circuit breaker in front of the model endpoint.

Closed: calls go through. After ``failures_to_open`` consecutive failed (or too slow) calls it
opens: callers get the local fallback at once instead of waiting for a deadline. After a backoff
it lets calls through again (half-open); the first result decides: success closes it, failure
re-opens it with the backoff doubled (up to ``backoff_max_s``). So it retries with backoff and
recovers by itself when the endpoint returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failures_to_open: int,
        backoff_s: float,
        backoff_max_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._failures_to_open = failures_to_open
        self._base_backoff = backoff_s
        self._max_backoff = backoff_max_s
        self._clock = clock
        self._failures = 0
        self._backoff = backoff_s
        self._opened_until: float | None = None
        self._half_open = False

    @property
    def state(self) -> BreakerState:
        if self._opened_until is None:
            return BreakerState.half_open if self._half_open else BreakerState.closed
        if self._clock() >= self._opened_until:
            return BreakerState.half_open
        return BreakerState.open

    def allows_calls(self) -> bool:
        return self.state is not BreakerState.open

    def record_success(self) -> None:
        self._failures = 0
        self._backoff = self._base_backoff
        self._opened_until = None
        self._half_open = False

    def record_failure(self) -> None:
        if self.state is BreakerState.half_open:
            # The probe failed: wait longer before the next one.
            self._backoff = min(self._backoff * 2, self._max_backoff)
            self._open()
            return
        self._failures += 1
        if self._failures >= self._failures_to_open:
            self._open()

    def _open(self) -> None:
        self._opened_until = self._clock() + self._backoff
        self._half_open = True  # once the backoff has passed, the next result decides

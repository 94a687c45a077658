"""Replay rate limit: a token bucket over messages/s and bytes/s (0 turns a limit off).

Pure: the caller passes `now` (monotonic seconds) and sleeps for the delay it gets back.
"""

from __future__ import annotations


class _Bucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp: float | None = None

    def delay(self, cost: float, now: float) -> float:
        """Seconds until `cost` tokens are available (0 if now); takes them if available."""
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        need = min(cost, self.burst)
        if self.tokens >= need - 1e-9 * need:  # float sums of sleeps land a hair short
            # A message larger than the burst passes once the bucket is full, then the
            # bucket goes negative so the average still holds.
            self.tokens -= cost
            return 0.0
        return (need - self.tokens) / self.rate


class RateLimit:
    """`delay(nbytes, now)`: how long to wait before sending one message of `nbytes`.

    A zero delay means the message may go now and has been counted; otherwise call again
    after sleeping. Bursts are one second's worth (at least one message).
    """

    def __init__(self, msgs_per_s: float = 0.0, bytes_per_s: float = 0.0) -> None:
        self._msgs = _Bucket(msgs_per_s, max(1.0, msgs_per_s)) if msgs_per_s > 0 else None
        self._bytes = _Bucket(bytes_per_s, max(1.0, bytes_per_s)) if bytes_per_s > 0 else None

    @property
    def active(self) -> bool:
        return self._msgs is not None or self._bytes is not None

    def delay(self, nbytes: int, now: float) -> float:
        if self._msgs is not None:
            wait = self._msgs.delay(1.0, now)
            if wait > 0:
                return wait
        if self._bytes is not None:
            wait = self._bytes.delay(float(nbytes), now)
            if wait > 0:
                if self._msgs is not None:
                    self._msgs.tokens += 1.0  # give the message token back; not sent yet
                return wait
        return 0.0

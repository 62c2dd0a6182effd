"""The comparator's CPU budget: `pymirror run` diffs at most `max_per_second` pairs a
second however many the core has queued (the rest wait there, then are skipped)."""

from __future__ import annotations

import trio
import trio.testing

from pymirror.lifecycle import compare_forever


class FloodedProxy:
    """Always has more pairs waiting than any batch asks for."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def compare_pending(self, max_pairs: int) -> int:
        self.asked.append(max_pairs)
        return max_pairs


def drained_in(seconds: float, max_per_second: int) -> int:
    proxy = FloodedProxy()

    async def main() -> None:
        with trio.move_on_after(seconds):
            await compare_forever(proxy, 0.1, max_per_second)  # type: ignore[arg-type]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return sum(proxy.asked)


def test_a_flood_is_diffed_at_the_cap_and_no_faster() -> None:
    # Ten seconds of virtual time: 10 batches a second of 100 pairs, plus the first.
    assert 10_000 <= drained_in(10.0, 1000) <= 10_100


def test_the_cap_is_configurable() -> None:
    assert 500 <= drained_in(10.0, 50) <= 505


class IdleProxy:
    """Compares nothing: every drain comes back empty."""

    def __init__(self) -> None:
        self.calls = 0

    def compare_pending(self, max_pairs: int) -> int:
        self.calls += 1
        return 0


def test_an_idle_comparator_backs_off_to_one_wake_up_a_second() -> None:
    proxy = IdleProxy()

    async def main() -> None:
        with trio.move_on_after(10.0):
            await compare_forever(proxy, 0.02, 1000)  # type: ignore[arg-type]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    # 0.02 s doubling to 1 s takes 7 waits (1.28 s), then one a second: about 16 calls,
    # where a fixed 20 ms pace would make 500.
    assert proxy.calls <= 20

"""stages/pool.py: parallel_map keeps the order, returns bad images as values, lets bugs through,
and holds bounded work in flight."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stages.decode import BadImage
from stages.pool import parallel_map


def _odd_is_bad(x: str) -> str:
    if int(x) % 2:
        raise BadImage(f"{x} is odd")
    return x * 2


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_parallel_map_keeps_order_and_returns_failures(workers: int) -> None:
    items = [str(i) for i in range(300)]
    out = list(parallel_map(_odd_is_bad, items, workers, chunk=7))
    assert [o for o in out if isinstance(o, str)] == [x * 2 for x in items[::2]]
    assert [str(o) for o in out if isinstance(o, BadImage)] == [f"{x} is odd" for x in items[1::2]]


def test_parallel_map_lets_bugs_through() -> None:
    def bug(x: str) -> str:
        raise KeyError(x)  # a bug in our code is not a bad image: it must not be skipped

    with pytest.raises(KeyError):
        list(parallel_map(bug, ["1"], 2))


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_parallel_map_holds_bounded_work_in_flight(workers: int) -> None:
    pulled = 0

    def source() -> Iterator[str]:
        nonlocal pulled
        for i in range(2000):
            pulled += 1
            yield str(i)

    ahead = []
    for consumed, _ in enumerate(parallel_map(str.upper, source(), workers, chunk=5), 1):
        ahead.append(pulled - consumed)
    assert consumed == 2000
    assert max(ahead) <= 4 * workers * 5  # never more than 4 chunks per worker read ahead

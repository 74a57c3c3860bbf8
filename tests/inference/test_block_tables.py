"""Block accounting of the KV pool (inference.kvcache.BlockManager's block-table
operations) on its own: growing a table, admitting a sequence against the prefix cache,
forking, registering full blocks. No model."""

from __future__ import annotations

from inference.kvcache import BlockManager

BS = 4


def test_grow_takes_only_the_missing_blocks_and_nothing_when_short():
    bm = BlockManager(5, BS)
    table: list[int] = []
    assert bm.grow(table, 5) and len(table) == 2 and bm.used == 2
    assert bm.grow(table, 8) and len(table) == 2  # still fits
    assert not bm.grow(table, 5 * BS + 1)  # 6 blocks needed, 5 in the pool
    assert len(table) == 2 and bm.used == 2


def test_admit_reuses_a_cached_prefix_and_takes_nothing_when_the_rest_does_not_fit():
    bm = BlockManager(6, BS)
    first = list(range(100, 110))  # 10 tokens: 2 full blocks and a partial one
    table: list[int] = []
    assert bm.grow(table, len(first))
    keyed, key = bm.register_full(table, first, 0, len(first), None)
    assert keyed == 2 and key is not None
    bm.release(table)
    again = first[:8] + [7, 7, 7]
    got = bm.admit(again, limit=len(again) - 1, headroom=0)
    assert got is not None
    found, last = got
    assert found == table[:2] and last == key
    bm.release(found)
    used = bm.used
    # The rest (1 block) plus a headroom of 5 more than the pool has: refused, nothing held.
    assert bm.admit(again, limit=len(again) - 1, headroom=5) is None
    assert bm.used == used


def test_fork_shares_full_blocks_and_gives_a_fresh_partial_one():
    bm = BlockManager(4, BS)
    table: list[int] = []
    bm.grow(table, 6)
    got = bm.fork(table, 6)
    assert got is not None
    copy, tail = got
    assert copy[0] == table[0] and tail == copy[1] and tail not in table
    assert bm.used == 3
    bm.release(table)
    assert bm.used == 2  # the shared full block is still the fork's
    # Exactly full: nothing to copy.
    full: list[int] = []
    bm.grow(full, 4)
    assert bm.fork(full, 4) == ([full[0]], None)
    # Short of a block for the partial tail: None, and no reference taken.
    bm2 = BlockManager(1, BS)
    t2: list[int] = []
    bm2.grow(t2, 3)
    assert bm2.fork(t2, 3) is None and bm2.used == 1

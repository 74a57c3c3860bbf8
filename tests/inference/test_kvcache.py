"""The KV pool's block manager: allocation, reference counts, prefix keys, LRU eviction;
and the memory-size parser behind KV_CACHE_MEMORY. Pure bookkeeping, no model."""

from __future__ import annotations

import pytest

from inference.kvcache import BlockManager, blocks_for
from inference.memory import parse_memory

BS = 4


def fill(bm: BlockManager, blocks: list[int], tokens: list[int]) -> None:
    """Register every full block of ``tokens`` (held in ``blocks``), as the scheduler does."""
    parent = None
    for i in range(len(tokens) // BS):
        parent = bm.register(blocks[i], parent, tuple(tokens[i * BS : (i + 1) * BS]))


def test_allocate_until_empty_then_refuse_without_taking_anything():
    bm = BlockManager(num_blocks=3, block_size=BS)
    a = bm.allocate(2)
    assert a is not None and len(set(a)) == 2 and bm.used == 2 and bm.free == 1
    assert bm.allocate(2) is None and bm.free == 1
    bm.release(a)
    assert bm.used == 0 and bm.free == 3


def test_prefix_found_shared_and_kept_after_release():
    bm = BlockManager(num_blocks=8, block_size=BS)
    prompt = list(range(10))  # two full blocks and a partial one
    blocks = bm.allocate(blocks_for(len(prompt), BS))
    fill(bm, blocks, prompt)
    found, _ = bm.lookup(prompt + [99], limit=len(prompt))
    assert found == blocks[:2]  # the partial block is never shared
    bm.release(found)
    bm.release(blocks)
    assert bm.used == 0 and bm.cached_free() == 2
    # A later prompt with the same first 8 tokens finds both blocks; a different second block stops the match.
    again, _ = bm.lookup(prompt[:8] + [5, 5], limit=9)
    assert again == blocks[:2]
    bm.release(again)
    other, _ = bm.lookup(prompt[:4] + [0, 0, 0, 0, 1], limit=8)
    assert other == blocks[:1]
    bm.release(other)


def test_lookup_leaves_a_token_to_compute():
    bm = BlockManager(num_blocks=4, block_size=BS)
    prompt = list(range(8))
    blocks = bm.allocate(2)
    fill(bm, blocks, prompt)
    found, _ = bm.lookup(prompt, limit=len(prompt) - 1)
    assert found == blocks[:1]


def test_cached_blocks_evicted_least_recently_used_first_and_forgotten():
    bm = BlockManager(num_blocks=2, block_size=BS)
    a, b = bm.allocate(1), bm.allocate(1)
    fill(bm, a, [1, 1, 1, 1])
    fill(bm, b, [2, 2, 2, 2])
    bm.release(a)
    bm.release(b)
    assert bm.free == 2
    fresh = bm.allocate(1)  # evicts a (released first)
    assert fresh == a
    assert bm.lookup([1, 1, 1, 1, 9], limit=4)[0] == []
    found, _ = bm.lookup([2, 2, 2, 2, 9], limit=4)
    assert found == b
    bm.release(found)
    bm.release(fresh)


def test_prefix_keys_are_sha256_digests_of_the_whole_prefix():
    first = BlockManager.chain_key(None, (1, 2, 3, 4))
    assert isinstance(first, bytes) and len(first) == 32
    assert BlockManager.chain_key(first, (5, 6, 7, 8)) != BlockManager.chain_key(None, (5, 6, 7, 8))
    # Token ids are encoded at a fixed width: (1, 23) and (12, 3) never share bytes.
    assert BlockManager.chain_key(None, (1, 23)) != BlockManager.chain_key(None, (12, 3))
    # Python's hash of small ints is the int itself; these tuples are what it used to key.
    assert BlockManager.chain_key(None, (-1,)) != BlockManager.chain_key(None, (-2,))


class CollidingKeys(BlockManager):
    """Every prefix gets the same key: what a successful collision attack would achieve."""

    @staticmethod
    def chain_key(parent, tokens):
        return b"same"


def test_a_key_collision_never_reuses_another_prefix():
    bm = CollidingKeys(num_blocks=4, block_size=BS)
    victim = [1, 2, 3, 4, 9]
    attacker = [6, 6, 6, 6, 9]
    blocks = bm.allocate(2)
    fill(bm, blocks, attacker)
    found, _ = bm.lookup(victim, limit=4)
    assert found == []  # same key, other tokens: computed afresh
    assert bm.lookup(attacker, limit=4)[0] == blocks[:1]  # the real owner of the tokens still hits


class KeysWithoutParent(BlockManager):
    """A block's key ignores what came before it: a collision between two prefixes that
    end in the same tokens."""

    @staticmethod
    def chain_key(parent, tokens):
        return BlockManager.chain_key(None, tokens)


def test_a_key_collision_with_another_parent_is_not_reused():
    bm = KeysWithoutParent(num_blocks=4, block_size=BS)
    blocks = bm.allocate(2)
    fill(bm, blocks, [6, 6, 6, 6, 7, 7, 7, 7])
    # The second block's tokens match, but it followed another first block.
    other = bm.allocate(1)
    fill(bm, other, [1, 1, 1, 1])
    found, _ = bm.lookup([1, 1, 1, 1, 7, 7, 7, 7, 0], limit=8)
    assert found == other


@pytest.mark.parametrize("text, value", [("2GiB", 2 << 30), ("512MB", 512_000_000), ("1000", 1000), ("0.25", 0.25)])
def test_parse_memory(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("text", ["", "lots", "1.5", "-3", "2 parsecs"])
def test_parse_memory_rejects(text):
    with pytest.raises(ValueError):
        parse_memory(text)


def test_touched_counts_the_blocks_ever_written_and_freed_blocks_are_reused_first():
    """A freed block is handed out again before a never-used one, so the written part of
    the pool (on CPU its resident part) grows only when more blocks are held at once."""
    bm = BlockManager(num_blocks=10, block_size=4)
    first = bm.allocate(3)
    assert first == [0, 1, 2] and bm.touched == 3
    bm.release(first)
    assert bm.allocate(3) == [0, 1, 2] and bm.touched == 3
    assert bm.allocate(2) == [3, 4] and bm.touched == 5


def test_a_byte_budget_beyond_the_available_memory_is_cut_to_it():
    from inference.memory import available_bytes, budget_bytes

    assert budget_bytes(1 << 20, "cpu") == 1 << 20
    assert budget_bytes(1 << 60, "cpu") <= available_bytes("cpu") * 1.1

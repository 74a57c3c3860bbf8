"""The KV pool a generation model's scheduler owns: allocated once, written in place.

Storage: one key and one value tensor for all layers, ``[layers, kv_heads, slots,
head_dim]``, where ``slots = num_blocks * block_size``. A sequence owns a list of
blocks (its block table); token ``i`` of the sequence lives in slot
``blocks[i // block_size] * block_size + i % block_size``. Joining, leaving or
preempting a sequence touches only its own block list: no other row's cache is copied.

:class:`BlockManager` hands out blocks and implements prefix reuse the vLLM way:

* a block that is full gets a key chained from its parent's key and its tokens, so a
  key identifies the whole prefix up to the end of that block. The key is a SHA-256
  digest, not Python's ``hash``: that one is neither randomised for integers nor
  collision-resistant, and one pool serves every API key, so a prompt crafted to
  collide could make another tenant's request reuse KV computed from other tokens (the
  flaw vLLM fixed in GHSA-rm76-4mrf-v9r8). A hit also compares the block's stored
  parent key and tokens, so even a colliding key is never reused for another prefix;
* a later sequence whose prompt starts with the same tokens finds those blocks by key
  and shares them (reference counts) instead of computing them again;
* a block whose last user leaves keeps its contents and key and goes to an LRU list;
  it is evicted (its key forgotten) only when a fresh block is needed and no
  never-used one is left.
"""

from __future__ import annotations

import collections
import hashlib
from array import array
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PoolShape:
    """What one token costs in the pool, from the model's config."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * torch.empty((), dtype=self.dtype).element_size()


def pool_shape_of(config, dtype: torch.dtype) -> PoolShape:
    """The pool geometry of a transformers decoder config."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return PoolShape(layers=int(config.num_hidden_layers), kv_heads=kv_heads, head_dim=head_dim, dtype=dtype)


class KVPool:
    """The preallocated key/value storage.

    Allocated once with ``torch.empty``: on CPU the operating system commits a page on
    its first write, so resident memory grows with the blocks actually used (up to the
    pool's size, which admission never exceeds) instead of the whole budget at load.
    Nothing reads a slot before it is written: attention gathers exactly the slots a
    row holds. The budget itself is checked against the memory available at load
    (:func:`inference.memory.budget_bytes`)."""

    def __init__(self, shape: PoolShape, *, num_blocks: int, block_size: int, device: torch.device) -> None:
        self.shape = shape
        self.num_blocks = num_blocks
        self.block_size = block_size
        slots = num_blocks * block_size
        dims = (shape.layers, shape.kv_heads, slots, shape.head_dim)
        self.keys = torch.empty(dims, dtype=shape.dtype, device=device)
        self.values = torch.empty(dims, dtype=shape.dtype, device=device)

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def copy_block(self, src: int, dst: int, tokens: int) -> None:
        """Copy the first ``tokens`` slots of block ``src`` into block ``dst``, every layer."""
        s, d = src * self.block_size, dst * self.block_size
        self.keys[:, :, d : d + tokens] = self.keys[:, :, s : s + tokens]
        self.values[:, :, d : d + tokens] = self.values[:, :, s : s + tokens]

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


class BlockManager:
    """Block allocation, reference counts and the prefix cache (see the module docstring).

    Used by the scheduler's worker thread only; ``stats`` is read from other threads
    and only reads ints."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._refs = [0] * num_blocks
        self._key_of: list[bytes | None] = [None] * num_blocks
        # What a keyed block was registered for: (parent key, its tokens).
        self._content_of: list[tuple[bytes | None, tuple[int, ...]] | None] = [None] * num_blocks
        self._by_key: dict[bytes, int] = {}
        self._fresh: list[int] = list(range(num_blocks - 1, -1, -1))  # never used or forgotten: pop() from the end
        self._lru: collections.OrderedDict[int, None] = collections.OrderedDict()  # free but still keyed
        self.used = 0  # blocks with a reference
        # Never-used blocks are handed out in ascending order, so blocks [0, touched) are
        # exactly those ever written: on CPU, the pool's committed (resident) part.
        self.touched = 0
        self.queries = 0  # prompt tokens looked up in the prefix cache
        self.hits = 0  # of which found

    # ------------------------------------------------------------------ capacity
    @property
    def free(self) -> int:
        """Blocks that can be handed out now (fresh ones plus evictable cached ones)."""
        return len(self._fresh) + len(self._lru)

    def cached_free(self) -> int:
        return len(self._lru)

    # ---------------------------------------------------------------- allocation
    def allocate(self, count: int) -> list[int] | None:
        """``count`` blocks with one reference each, or None (nothing taken) if short."""
        if count > self.free:
            return None
        out = []
        for _ in range(count):
            if self._fresh:
                block = self._fresh.pop()
                self.touched = max(self.touched, block + 1)
            else:
                block, _ = self._lru.popitem(last=False)  # evict the least recently used
                key = self._key_of[block]
                if key is not None and self._by_key.get(key) == block:
                    del self._by_key[key]
                self._key_of[block] = None
                self._content_of[block] = None
            self._refs[block] = 1
            out.append(block)
        self.used += count
        return out

    def release(self, blocks: list[int]) -> None:
        """Drop one reference from each block; the tail goes to the LRU first, so a
        prefix's first blocks (shared most widely) are evicted last."""
        for block in reversed(blocks):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self.used -= 1
                if self._key_of[block] is not None:
                    self._lru[block] = None
                else:
                    self._fresh.append(block)

    # ------------------------------------------------------------ block tables
    def grow(self, table: list[int], tokens: int) -> bool:
        """Extend ``table`` (in place) to hold ``tokens`` tokens; False, and nothing
        taken, if the pool is short."""
        more = blocks_for(tokens, self.block_size) - len(table)
        if more <= 0:
            return True
        got = self.allocate(more)
        if got is None:
            return False
        table.extend(got)
        return True

    def admit(self, tokens: list[int], limit: int, headroom: int) -> tuple[list[int], bytes | None] | None:
        """A new sequence: the cached blocks of its longest cached prefix (at most
        ``limit`` tokens), if the pool can also hold the rest of ``tokens`` plus
        ``headroom`` more blocks; else None, and nothing taken."""
        found, key = self.lookup(tokens, limit)
        if blocks_for(len(tokens), self.block_size) - len(found) + headroom > self.free:
            self.release(found)
            return None
        return found, key

    def fork(self, table: list[int], held: int) -> tuple[list[int], int | None] | None:
        """A new sequence continuing one that holds ``held`` tokens in ``table``: it
        shares the full blocks and gets a fresh block for the partial last one (whose
        contents the caller copies: returned as the second item, None when there is
        no partial block). None, and nothing taken, if the pool is short."""
        full = held // self.block_size
        shared = table[:full]
        tail: list[int] = []
        if held % self.block_size:
            got = self.allocate(1)
            if got is None:
                return None
            tail = got
        self.share(shared)
        return shared + tail, (tail[0] if tail else None)

    def register_full(self, table: list[int], tokens: list[int], keyed: int, computed: int,
                      last_key: bytes | None) -> tuple[int, bytes | None]:
        """Register the blocks of ``table`` that filled up since the first ``keyed``
        (``computed`` tokens are in the pool); returns the new count and last key."""
        bs = self.block_size
        while (keyed + 1) * bs <= computed:
            start = keyed * bs
            last_key = self.register(table[keyed], last_key, tuple(tokens[start : start + bs]))
            keyed += 1
        return keyed, last_key

    # -------------------------------------------------------------- prefix cache
    @staticmethod
    def chain_key(parent: bytes | None, tokens: tuple[int, ...]) -> bytes:
        """SHA-256 over the parent's key and the block's token ids (8 bytes each, so
        no two token lists share an encoding). The pool belongs to one model and one
        KV dtype, so nothing else changes what a block holds."""
        digest = hashlib.sha256(parent or b"\0" * 32)
        digest.update(array("q", tokens).tobytes())
        return digest.digest()

    def lookup(self, tokens: list[int], limit: int) -> tuple[list[int], bytes | None]:
        """Blocks holding the longest cached prefix of ``tokens`` (whole blocks, at most
        ``limit`` tokens), each with a reference taken; and the key of the last one."""
        bs = self.block_size
        found: list[int] = []
        parent: bytes | None = None
        for start in range(0, (limit // bs) * bs, bs):
            block_tokens = tuple(tokens[start : start + bs])
            key = self.chain_key(parent, block_tokens)
            block = self._by_key.get(key)
            # An equal key for another parent or other tokens would be a hash collision:
            # never reused. Checked block by block, the whole prefix matches.
            if block is None or self._content_of[block] != (parent, block_tokens):
                break
            found.append(block)
            parent = key
        for block in found:
            if self._refs[block] == 0:
                self._lru.pop(block, None)
                self.used += 1
            self._refs[block] += 1
        return found, parent

    def share(self, blocks: list[int]) -> None:
        """One more reference to blocks that are in use (a fork of a sequence)."""
        for block in blocks:
            self._refs[block] += 1

    def record_lookup(self, asked: int, hit: int) -> None:
        self.queries += asked
        self.hits += hit

    def register(self, block: int, parent: bytes | None, tokens: tuple[int, ...]) -> bytes:
        """Block ``block`` is full, holds ``tokens`` and follows the prefix keyed
        ``parent``: make it findable, and return its key. If the same prefix is already
        cached elsewhere, the older block stays the one found."""
        key = self.chain_key(parent, tokens)
        if self._key_of[block] is None:
            self._key_of[block] = key
            self._content_of[block] = (parent, tokens)
            self._by_key.setdefault(key, block)
        return key

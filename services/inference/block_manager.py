"""KV cache blocks: pools with reference counts, per-sequence block tables, sliding-window freeing,
and prefix caching of full blocks by hash.

One pool per KV group (a group = the layers sharing one window size; 0 = full attention), because
a window layer frees its old blocks while a full-attention layer must keep them. A sequence has
one block table per group; an entry of -1 is a block that slid out of the window and went back to
the pool. Full blocks are registered under a hash of (parent hash, their tokens); a freed block
keeps its hash until the pool hands it out again, so a later request with the same prefix (or a
preempted request coming back) picks its K/V up instead of recomputing it. A hit also compares
the block's tokens, so a hash collision is a miss, never wrong K/V.
"""

from __future__ import annotations

from collections import OrderedDict

from clawdbot.services.inference.sequence import PENDING, Sequence


def block_hash(parent: int | None, tokens: tuple[int, ...]) -> int:
    return hash((parent, tokens))


class BlockPool:
    """Physical blocks of one group: reference counts, an LRU free list, hash <-> block maps."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.refs = [0] * num_blocks
        # Free blocks in eviction order: never-hashed ones first, then cached ones, oldest first.
        self.free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self.hash_of: dict[int, int] = {}
        self.block_of: dict[int, int] = {}
        self.tokens_of: dict[int, tuple[int, ...]] = {}  # to tell a real hit from a hash collision

    @property
    def num_free(self) -> int:
        return len(self.free)

    def allocate(self) -> int:
        block, _ = self.free.popitem(last=False)
        old = self.hash_of.pop(block, None)
        if old is not None:
            del self.block_of[old]
            del self.tokens_of[block]
        self.refs[block] = 1
        return block

    def acquire(self, block: int) -> None:
        """Take another reference (a prefix-cache hit), reviving the block if it was free."""
        if self.refs[block] == 0:
            del self.free[block]
        self.refs[block] += 1

    def release(self, block: int) -> None:
        if self.refs[block] <= 0:
            raise RuntimeError(f"double free of block {block}")
        self.refs[block] -= 1
        if self.refs[block] == 0:
            self.free[block] = None
            if block not in self.hash_of:
                self.free.move_to_end(block, last=False)

    def lookup(self, h: int, tokens: tuple[int, ...]) -> int | None:
        block = self.block_of.get(h)
        return block if block is not None and self.tokens_of[block] == tokens else None

    def register(self, block: int, h: int, tokens: tuple[int, ...]) -> None:
        if h in self.block_of or block in self.hash_of:
            return
        self.hash_of[block] = h
        self.block_of[h] = block
        self.tokens_of[block] = tokens


class BlockManager:
    """Block tables of every sequence across the KV groups; the scheduler's only view of memory."""

    def __init__(
        self, num_blocks: int, block_size: int, windows: list[int], prefix_caching: bool = True
    ) -> None:
        self.block_size = block_size
        self.windows = list(windows)
        self.pools = [BlockPool(num_blocks) for _ in windows]
        self.prefix_caching = prefix_caching
        self.tables: dict[str, list[list[int]]] = {}
        self.hashes: dict[str, list[int]] = {}
        # Per sequence and group: table entries before this index are known freed (-1), so sliding
        # looks only at entries the window passed since the last step, not the whole table.
        self.slid: dict[str, list[int]] = {}
        # Per sequence, for `reserve`'s fast path: tokens every group's table already covers, and
        # the first position from which some window group has a block to free.
        self.covered: dict[str, int] = {}
        self.slide_at: dict[str, int] = {}
        self.cache_queries = 0  # full prompt blocks looked up
        self.cache_hits = 0  # of which found in every group

    # -- views ---------------------------------------------------------------------------------
    def table(self, seq_id: str, group: int) -> list[int]:
        return self.tables[seq_id][group]

    def live_blocks(self, seq_id: str, group: int) -> int:
        return sum(1 for b in self.tables.get(seq_id, [[]] * len(self.pools))[group] if b >= 0)

    def num_used(self, group: int | None = None) -> int:
        groups = range(len(self.pools)) if group is None else [group]
        return sum(self.pools[g].num_blocks - self.pools[g].num_free for g in groups)

    def usage(self) -> float:
        """Fraction of blocks in use, over all groups."""
        total = sum(p.num_blocks for p in self.pools)
        return self.num_used() / total if total else 0.0

    # -- lifecycle -----------------------------------------------------------------------------
    def first_needed(self, group: int, first_pos: int) -> int:
        """Index of the first logical block the query at `first_pos` still attends to."""
        return self.first_needed_all(group, [first_pos])[0]

    def first_needed_all(self, group: int, first_positions: list[int]) -> list[int]:
        """`first_needed` of many positions in one call (the model runner's per-step batch)."""
        window, bs = self.windows[group], self.block_size
        if window <= 0:
            return [0] * len(first_positions)
        return [max(0, pos - window + 1) // bs for pos in first_positions]

    def admit(self, seq: Sequence) -> int:
        """Start block tables for a sequence, reusing cached full blocks of its prefix; returns the
        number of tokens whose K/V is already there (always < len(tokens): the last one is computed)."""
        self.tables[seq.request_id] = [[] for _ in self.pools]
        self.hashes[seq.request_id] = []
        self.slid[seq.request_id] = [0] * len(self.pools)
        if not self.prefix_caching:
            self._refresh(seq.request_id)
            return 0
        bs = self.block_size
        hashes: list[int] = []
        chunks: list[tuple[int, ...]] = []
        parent: int | None = None
        for i in range((seq.num_tokens - 1) // bs):
            chunks.append(tuple(seq.token_ids[i * bs : (i + 1) * bs]))
            parent = block_hash(parent, chunks[-1])
            hashes.append(parent)
        found: list[list[int]] = []
        for h, tokens in zip(hashes, chunks, strict=True):
            blocks = [b for b in (pool.lookup(h, tokens) for pool in self.pools) if b is not None]
            if len(blocks) < len(self.pools):
                break
            found.append(blocks)
        self.cache_queries += len(hashes)
        self.cache_hits += len(found)
        for blocks in found:
            for group, block in enumerate(blocks):
                self.pools[group].acquire(block)
                self.tables[seq.request_id][group].append(block)
        self.hashes[seq.request_id] = hashes[: len(found)]
        cached = len(found) * bs
        for group in range(len(self.pools)):
            self.slide(seq.request_id, group, cached)
        self._refresh(seq.request_id)
        return cached

    def slide(self, seq_id: str, group: int, first_pos: int) -> int:
        """Free the blocks of `group` that no query from `first_pos` on can see; returns how many."""
        if self.windows[group] <= 0:
            return 0
        table = self.tables[seq_id][group]
        marks = self.slid[seq_id]
        start, stop = marks[group], min(self.first_needed(group, first_pos), len(table))
        freed = 0
        for i in range(start, stop):
            if table[i] >= 0:
                self.pools[group].release(table[i])
                table[i] = -1
                freed += 1
        marks[group] = max(start, stop)
        return freed

    def reserve(self, seq: Sequence, num_new: int) -> bool:
        """Make room for `num_new` more tokens after `seq.num_computed` in every group, all or nothing."""
        seq_id = seq.request_id
        first, end = seq.num_computed, seq.num_computed + num_new
        if end <= self.covered[seq_id] and first < self.slide_at[seq_id]:
            return True  # most decode steps: the last block has room and no block left the window
        for group in range(len(self.pools)):
            self.slide(seq_id, group, first)
        needed = (end + self.block_size - 1) // self.block_size
        shortfall = [max(0, needed - len(table)) for table in self.tables[seq_id]]
        if any(n > self.pools[g].num_free for g, n in enumerate(shortfall)):
            self._refresh(seq_id)
            return False
        for group, n in enumerate(shortfall):
            table = self.tables[seq_id][group]
            # Blocks the window already passed (a long prompt's early chunks) need no storage.
            skip = self.first_needed(group, first)
            for _ in range(n):
                table.append(-1 if len(table) < skip else self.pools[group].allocate())
        self._refresh(seq_id)
        return True

    def can_extend_all(self, seqs: list[Sequence], num_new: int) -> bool:
        """Whether `reserve(seq, num_new)` would succeed for every one of `seqs` together: a chain of
        decode steps takes blocks for all its sequences or for none. Blocks a window slide would
        free are not counted, so a no can be cautious; a yes is certain."""
        bs = self.block_size
        worst = len(seqs) * ((num_new - 1) // bs + 1)  # new blocks per group if every one needs them
        if all(pool.num_free >= worst for pool in self.pools):
            return True
        short = [0] * len(self.pools)
        for seq in seqs:
            need = (seq.num_computed + num_new + bs - 1) // bs
            for group, table in enumerate(self.tables[seq.request_id]):
                short[group] += max(0, need - len(table))
        return all(n <= pool.num_free for n, pool in zip(short, self.pools, strict=True))

    def _refresh(self, seq_id: str) -> None:
        """Recompute `covered` and `slide_at` after the tables or the slide marks changed."""
        bs = self.block_size
        self.covered[seq_id] = min(len(table) for table in self.tables[seq_id]) * bs
        marks = self.slid[seq_id]
        # Group g frees its next block once first_needed > marks[g]: first - window + 1 >= (mark + 1) * bs.
        self.slide_at[seq_id] = min(
            ((marks[g] + 1) * bs + window - 1 for g, window in enumerate(self.windows) if window > 0),
            default=1 << 62,
        )

    def commit(self, seq: Sequence) -> None:
        """Register the sequence's newly full, computed blocks for prefix reuse, in order, up to the
        first one holding a token not read back yet (PENDING): its hash waits for the real token."""
        if not self.prefix_caching:
            return
        bs = self.block_size
        hashes = self.hashes[seq.request_id]
        full = seq.num_computed // bs
        if full <= len(hashes):
            return  # most steps: no block filled up
        parent = hashes[-1] if hashes else None
        for i in range(len(hashes), full):
            tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            if PENDING in tokens:
                return
            parent = block_hash(parent, tokens)
            hashes.append(parent)
            for group, pool in enumerate(self.pools):
                block = self.tables[seq.request_id][group][i]
                if block >= 0:
                    pool.register(block, parent, tokens)

    def free(self, seq_id: str) -> None:
        for group, table in enumerate(self.tables.pop(seq_id, [])):
            for block in table:
                if block >= 0:
                    self.pools[group].release(block)
        self.hashes.pop(seq_id, None)
        self.slid.pop(seq_id, None)
        self.covered.pop(seq_id, None)
        self.slide_at.pop(seq_id, None)

    def check(self) -> None:
        """Invariants (used by tests): refcounts equal table references; free list = zero refs."""
        for group, pool in enumerate(self.pools):
            counts = [0] * pool.num_blocks
            for tables in self.tables.values():
                for block in tables[group]:
                    if block >= 0:
                        counts[block] += 1
            if counts != pool.refs:
                raise AssertionError(f"group {group}: refcounts {pool.refs} != references {counts}")
            free = {b for b, r in enumerate(pool.refs) if r == 0}
            if free != set(pool.free):
                raise AssertionError(f"group {group}: free list out of sync")
            if set(pool.tokens_of) != set(pool.hash_of):
                raise AssertionError(f"group {group}: token records out of sync")
            for block, h in pool.hash_of.items():
                if pool.block_of.get(h) != block:
                    raise AssertionError(f"group {group}: hash maps out of sync")

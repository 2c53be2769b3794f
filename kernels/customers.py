"""Customer-id hashing and exact dense encoding (NumPy in, NumPy out).

Customers are spread over ``P`` hash partitions (the top bits of a 64-bit hash) and each
partition owns an open-addressing table that maps an id to a dense *local* code
``0..n[p]-1`` in order of first appearance.  A table slot is ``(key, code + 1)`` for
integer ids.  Byte-string ids are kept in a per-partition arena and compared in full on
every tag match (a hash collision costs a probe, it never merges two customers); their
slot is ``(tag, offset << 32 | code + 1)``: the tag is the hash's top 40 bits and the
id's length, and the slot also says where the id's bytes start, so the compare goes
straight from the slot to the bytes (one memory miss fewer per order line than looking
the offset up by code).

Partitions exist so that threads can own customers: the worker that owns a partition is
the only one that ever writes its table or its aggregate rows, and because the number of
partitions is fixed (not the thread count) the result is the same with 1 or 32 threads.

Layouts (all int64 unless noted):

``table``  (P, cap, 2)   slot = (key, code + 1) or (tag, offset << 32 | code + 1); a
                         second word of 0 marks an empty slot, so a new table is
                         ``np.zeros`` (free, lazily zeroed pages); cap is a power of two,
                         kept at most 70 % full by the caller
``keys``   (P, ncap)     integer ids by local code (integer tables)
``key_offsets`` (P, ncap + 1) and ``key_data`` (P, bcap) uint8: byte-string ids by local
                         code; a partition's arena holds < 2**32 bytes (MAX_ARENA_BYTES)
``n``      (P,)          customers per partition
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._policy import kernel, load_u64, prefetch

__all__ = [
    "PARTITION_BITS",
    "N_PARTITIONS",
    "mix64",
    "hash_int64",
    "hash_bytes",
    "partition_of",
    "probe_int64",
    "probe_bytes",
    "prefetch_bytes_id",
    "bytes_tag",
    "slot_offset",
    "slot_code",
    "MAX_ARENA_BYTES",
    "rehash_int64",
    "rehash_bytes",
]

#: log2 of the number of customer partitions; fixed so results never depend on threads.
PARTITION_BITS = 4
N_PARTITIONS = 1 << PARTITION_BITS

_EMPTY = 0  # slot[1] holds code + 1 (and, for byte strings, the arena offset above bit 32)
_LEN_MASK = (1 << 24) - 1  # low bits of a byte-string tag: the id's length (capped)
_CODE_MASK = (1 << 32) - 1
#: bytes of ids one partition's arena can hold (the offset is stored in 32 bits of a slot)
MAX_ARENA_BYTES = 1 << 32


@kernel(inline=True)
def bytes_tag(h, length):
    """Slot word 0 of a byte-string id: its hash's top 40 bits and its length (capped at 2**24 - 1)."""
    return (h & ~np.int64(_LEN_MASK)) | min(length, _LEN_MASK)


@kernel(inline=True)
def slot_offset(word):
    """Arena offset of a byte-string slot's id."""
    return np.int64(np.uint64(word) >> np.uint64(32))


@kernel(inline=True)
def slot_code(word):
    """Local code held by a slot's second word."""
    return (word & _CODE_MASK) - 1


@kernel(inline=True)
def mix64(x):
    """A 64-bit finalizer (murmur3 fmix64): every input bit moves every output bit."""
    z = np.uint64(x)
    z ^= z >> np.uint64(33)
    z *= np.uint64(0xFF51AFD7ED558CCD)
    z ^= z >> np.uint64(33)
    z *= np.uint64(0xC4CEB9FE1A85EC53)
    z ^= z >> np.uint64(33)
    return np.int64(z)


_CHUNK = 1 << 16  # rows per parallel chunk when hashing


@kernel(parallel=True)
def hash_int64(ids, partition_bits, out, counts):
    """``out[i] = mix64(ids[i])`` for int64 ``ids``; ``counts[p]`` += lines per partition.

    ``out``: int64 (m,); ``counts``: int64 (2**partition_bits,), added to (not reset).
    """
    m = ids.shape[0]
    n_chunks = (m + _CHUNK - 1) // _CHUNK
    per_chunk = np.zeros((n_chunks, counts.shape[0]), dtype=np.int64)
    for k in prange(n_chunks):
        for i in range(k * _CHUNK, min(m, (k + 1) * _CHUNK)):
            h = mix64(ids[i])
            out[i] = h
            per_chunk[k, partition_of(h, partition_bits)] += 1
    for k in range(n_chunks):
        for p in range(counts.shape[0]):
            counts[p] += per_chunk[k, p]


@kernel(inline=True)
def _word8(data, i):
    # uint64 of data[i:i+8] (a 1-D uint8 array), one unaligned load; native byte order, so
    # hashes (hence partitions and row order, never results) may differ across platforms.
    return load_u64(data, i)


@kernel(inline=True)
def _hash_span(data, start, stop):
    # Eight bytes per step (a multiply-xorshift round each), the tail byte-wise, then a
    # full-avalanche finalizer so the top bits (partition) and the low bits (slot) are
    # both well mixed.  Byte-wise FNV-1a was 1.4x slower on 17-byte ids.
    h = np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(stop - start)
    i = start
    while i + 8 <= stop:
        h = (h ^ _word8(data, i)) * np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(29)
        i += 8
    if i < stop:
        tail = np.uint64(0)
        for k in range(stop - i):
            tail |= np.uint64(data[i + k]) << np.uint64(8 * k)
        h = (h ^ tail) * np.uint64(0xC4CEB9FE1A85EC53)
    return mix64(h)


@kernel(parallel=True)
def hash_bytes(offsets, data, partition_bits, out, counts, nbytes):
    """Hash each byte string ``data[offsets[i]:offsets[i+1]]`` into ``out[i]`` (int64).

    ``counts[p]`` += strings and ``nbytes[p]`` += their bytes per partition (added to).
    """
    m = out.shape[0]
    n_chunks = (m + _CHUNK - 1) // _CHUNK
    P = counts.shape[0]
    per_chunk = np.zeros((n_chunks, 2 * P), dtype=np.int64)
    for k in prange(n_chunks):
        for i in range(k * _CHUNK, min(m, (k + 1) * _CHUNK)):
            h = _hash_span(data, offsets[i], offsets[i + 1])
            out[i] = h
            p = partition_of(h, partition_bits)
            per_chunk[k, p] += 1
            per_chunk[k, P + p] += offsets[i + 1] - offsets[i]
    for k in range(n_chunks):
        for p in range(P):
            counts[p] += per_chunk[k, p]
            nbytes[p] += per_chunk[k, P + p]


@kernel(inline=True)
def partition_of(h, partition_bits):
    """Partition of a hash: its top ``partition_bits`` bits."""
    return np.int64(np.uint64(h) >> np.uint64(64 - partition_bits))


@kernel(inline=True)
def probe_int64(table, keys, n, p, key, h):
    """Local code of integer ``key`` in partition ``p``, inserting it if new.

    ``h`` is ``mix64(key)``; the slot is taken from its low bits.  Updates ``n[p]`` and
    ``keys[p]`` on insert.  The caller guarantees room (table at most 70 % full).
    """
    mask = table.shape[1] - 1
    s = h & mask
    while True:
        stored = table[p, s, 1]
        if stored == _EMPTY:
            code = n[p]
            n[p] = code + 1
            table[p, s, 0] = key
            table[p, s, 1] = code + 1
            keys[p, code] = key
            return code
        if table[p, s, 0] == key:
            return stored - 1
        s = (s + 1) & mask


@kernel(inline=True)
def probe_bytes(table, key_offsets, key_data, n, nbytes, p, data, start, stop, h):
    """Local code of the byte string ``data[start:stop]`` in partition ``p``, inserting it if new.

    A slot matches only when its tag (hash bits and length) is equal *and* the stored
    bytes are equal.  On insert the bytes are appended to the partition's arena
    (``nbytes[p]`` grows; the caller keeps it below :data:`MAX_ARENA_BYTES`).
    """
    mask = table.shape[1] - 1
    s = h & mask
    length = stop - start
    tag = bytes_tag(h, length)
    while True:
        word = table[p, s, 1]
        if word == _EMPTY:
            code = n[p]
            n[p] = code + 1
            base = nbytes[p]
            table[p, s, 0] = tag
            table[p, s, 1] = (base << 32) | (code + 1)
            for j in range(length):
                key_data[p, base + j] = data[start + j]
            nbytes[p] = base + length
            key_offsets[p, code + 1] = base + length
            return code
        if table[p, s, 0] == tag:
            code = slot_code(word)
            k0 = slot_offset(word)
            if (length < _LEN_MASK or key_offsets[p, code + 1] - key_offsets[p, code] == length) \
                    and _same_bytes(key_data[p], k0, data, start, length):
                return code
        s = (s + 1) & mask


@kernel(inline=True)
def _same_bytes(a, i, b, j, length):
    # Eight bytes per compare, then the tail: on 17-byte ids this took the steady-state
    # string kernel from 44 to 39 ns per line (byte-wise compare).
    k = 0
    while k + 8 <= length:
        if _word8(a, i + k) != _word8(b, j + k):
            return False
        k += 8
    while k < length:
        if a[i + k] != b[j + k]:
            return False
        k += 1
    return True


@kernel(inline=True)
def prefetch_bytes_id(table, key_data, p, h, length):
    """Start loading the stored bytes of the id a probe for ``(h, length)`` will compare against.

    Walks the probe sequence to the first slot whose tag matches (the slots were
    prefetched before, and a displaced id is usually in the same cache line) and
    prefetches both ends of its bytes, which may straddle two cache lines.  Returns that
    slot's local code — the id's code unless a tag collision hides it, which only the
    byte compare can tell — or -1 if no tag matches (a new id, most likely).

    Prefetching only the home slot's candidate missed every displaced id: 57 -> 51 ns per
    line in the steady-state kernel with the walk, 44 with both ends (17-byte ids).
    """
    mask = table.shape[1] - 1
    tag = bytes_tag(h, length)
    s = h & mask
    while True:
        word = table[p, s, 1]
        if word == _EMPTY:
            return -1
        if table[p, s, 0] == tag:
            k0 = slot_offset(word)
            prefetch(key_data, p, k0)
            prefetch(key_data, p, k0 + max(length, 1) - 1)
            return slot_code(word)
        s = (s + 1) & mask


#: byte-string ids hashed (and their new slots prefetched) together when a table grows.
#: Whole 1e8-line runs: rehashing 0.70-0.77 -> 0.49 s; for integer ids, whose hash is a
#: few multiplies, the same grouping changed nothing (0.59-0.62 s either way).
_REHASH_GROUP = 64


@kernel(parallel=True)
def rehash_int64(keys, n, table):
    """Fill an empty (all-zero) ``table`` from ``keys``/``n``; used when a table grows."""
    mask = table.shape[1] - 1
    for p in prange(keys.shape[0]):
        for code in range(n[p]):
            key = keys[p, code]
            s = mix64(key) & mask
            while table[p, s, 1] != _EMPTY:
                s = (s + 1) & mask
            table[p, s, 0] = key
            table[p, s, 1] = code + 1


@kernel(parallel=True)
def rehash_bytes(key_offsets, key_data, n, table):
    """Fill an empty ``table`` from the byte-string arena; used when a table grows."""
    mask = table.shape[1] - 1
    for p in prange(key_offsets.shape[0]):
        # A group of ids is hashed and its slots prefetched before any is placed: every
        # placement is a random write into a table of up to hundreds of MB.
        hashes = np.empty(_REHASH_GROUP, dtype=np.int64)
        for c0 in range(0, n[p], _REHASH_GROUP):
            k = min(_REHASH_GROUP, n[p] - c0)
            for j in range(k):
                hashes[j] = _hash_span(key_data[p], key_offsets[p, c0 + j], key_offsets[p, c0 + j + 1])
                prefetch(table, p, hashes[j] & mask)
            for j in range(k):
                code = c0 + j
                a = key_offsets[p, code]
                h = hashes[j]
                s = h & mask
                while table[p, s, 1] != _EMPTY:
                    s = (s + 1) & mask
                table[p, s, 0] = bytes_tag(h, key_offsets[p, code + 1] - a)
                table[p, s, 1] = (a << 32) | (code + 1)

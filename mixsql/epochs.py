"""A component's visiting order in one epoch, as math on its selection: the one definition that
compiling writes out and a run derives on demand (for the epochs a plan does not store).

Inputs are a component's selection in canonical (bucket, file, row) order, described by its block
**runs** (``run_starts``: where each maximal range of samples of one block starts; ``run_keys``:
each run's block key, plan file << 32 | block) and its curriculum ``buckets``.

- **Buckets**: bucket b holds canonical positions ``[b*n//k, (b+1)*n//k)`` (``bucket_bounds``).
- **Block order of epoch e**: in each bucket, the runs (cut at the bucket's edges) are put in the
  order of ``splitmix64(key ^ salt_e)`` (stable), with ``salt_e`` the first PCG64 output seeded
  with (seed, BLOCK_ORDER, dataset, e): the same order for every component of a dataset, new each
  epoch. Laying the runs out in that order gives the bucket's epoch sequence.
- **Pools**: each bucket's sequence is cut into P pools (``pool_bounds``); even-numbered pools are
  visited backwards. Partition q's epoch pool is its piece of every bucket, in bucket order.
- **Window shuffle**: within a pool, consecutive blocks form windows of ``window`` blocks (a new
  window also starts at each bucket's start), and the samples of each window are put in the order
  of PCG64 outputs seeded with (seed, WINDOW_SHUFFLE, component, q, e) (``shuffle_order``).

Only integer arithmetic and the raw 64-bit PCG64 output are used: stable across NumPy versions and
platforms. ``pool`` computes one partition's pool in O(runs + pool size), so a rank that needs
epoch e of its partitions never lays out the whole component. This module imports only NumPy.
"""

from __future__ import annotations

import concurrent.futures
import os
import typing as t

import numpy as np

BLOCK_ORDER, WINDOW_SHUFFLE = 1, 2
_U = np.uint64
SORT_PIECE = 1 << 16  # keys of whole windows the windows' sort takes at a time (split over the cores)


def random_keys(seed: int, purpose: int, index: t.Sequence[int], n: int) -> np.ndarray:
    """n raw 64-bit PCG64 outputs: stable across NumPy versions and platforms."""
    generator = np.random.PCG64(np.random.SeedSequence([seed, purpose, *index]))
    return generator.random_raw(n) if n else np.zeros(0, dtype=np.uint64)


def block_hash(keys: np.ndarray, salt: int) -> np.ndarray:
    """A seeded pseudo-random 64-bit value per block key (splitmix64: plain integer arithmetic)."""
    z = keys.astype(_U) ^ _U(salt)
    with np.errstate(over="ignore"):
        z ^= z >> _U(30)
        z *= _U(0xBF58476D1CE4E5B9)
        z ^= z >> _U(27)
        z *= _U(0x94D049BB133111EB)
        z ^= z >> _U(31)
    return z


def epoch_salt(seed: int, dataset: int, epoch: int) -> int:
    """The salt of a dataset's block order in one epoch."""
    return int(random_keys(seed, BLOCK_ORDER, (dataset, epoch), 1)[0])


def pool_bounds(samples: int, partitions: int) -> list[int]:
    """Where each canonical partition's pool of a component starts: partition q gets [b[q], b[q+1])."""
    return [q * samples // partitions for q in range(partitions + 1)]


def bucket_bounds(samples: int, buckets: int) -> list[int]:
    """Where each bucket (quantile of the curriculum key) of a component's samples starts: bucket b
    holds the samples of key rank [b*n//k, (b+1)*n//k)."""
    return [b * samples // buckets for b in range(buckets + 1)]


def bucket_of(rank: np.ndarray, samples: int, buckets: int) -> np.ndarray:
    """The bucket of each key rank, by the rule of ``bucket_bounds``: the largest b with
    b*n//k <= r, which is ((r+1)*k - 1) // n."""
    return ((np.asarray(rank, dtype=np.int64) + 1) * buckets - 1) // samples


def pool_sizes(samples: int, buckets: int, partitions: int) -> list[int]:
    """Samples of one epoch in each partition's pool: every bucket is cut into P pieces."""
    sizes = [0] * partitions
    edges = bucket_bounds(samples, buckets)
    for b in range(buckets):
        bounds = pool_bounds(edges[b + 1] - edges[b], partitions)
        for q in range(partitions):
            sizes[q] += bounds[q + 1] - bounds[q]
    return sizes


def run_starts(run: np.ndarray) -> np.ndarray:
    """Where each run starts, and the end (len(run) + 1 values), from each sample's run id."""
    changes = np.flatnonzero(run[1:] != run[:-1]) + 1
    return np.concatenate(([0], changes, [len(run)])).astype(np.int64)


def laid_runs(starts: np.ndarray, keys: np.ndarray, begin: int, end: int, salt: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """The runs of canonical positions [begin, end) (cut at its edges) in the epoch's block order:
    (each laid run's first canonical position, its length)."""
    if end <= begin:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    lo = int(np.searchsorted(starts, begin, side="right")) - 1
    hi = int(np.searchsorted(starts, end, side="left"))
    firsts = starts[lo:hi].copy()
    firsts[0] = begin
    lengths = np.diff(np.append(firsts, end))
    order = np.argsort(block_hash(keys[lo:hi], salt), kind="stable")
    return firsts[order], lengths[order]


def cut_runs(firsts: np.ndarray, lengths: np.ndarray, a: int, b: int, starts: np.ndarray | None = None
             ) -> t.Any:
    """Canonical positions at laid positions [a, b) of runs laid out one after another; with
    ``starts`` (every run's first canonical position) also the run of each."""
    if b <= a:
        empty = np.zeros(0, dtype=np.int64)
        return empty if starts is None else (empty, empty)
    ends = np.cumsum(lengths)
    i = int(np.searchsorted(ends, a, side="right"))
    j = int(np.searchsorted(ends, b, side="left"))
    f, n = firsts[i: j + 1].copy(), lengths[i: j + 1].copy()
    skip = a - (int(ends[i]) - int(lengths[i]))
    f[0] += skip
    n[0] -= skip
    n[-1] -= int(ends[j]) - b
    positions = np.repeat(f - np.concatenate(([0], np.cumsum(n)[:-1])), n) + np.arange(int(n.sum()), dtype=np.int64)
    if starts is None:
        return positions
    return positions, np.repeat(np.searchsorted(starts, f, side="right") - 1, n)


Laid = t.List[t.Tuple[np.ndarray, np.ndarray]]


def laid_buckets(starts: np.ndarray, keys: np.ndarray, samples: int, buckets: int, salt: int) -> Laid:
    """Every bucket's runs in the epoch's block order (``laid_runs``): what all pools of the epoch share."""
    edges = bucket_bounds(samples, buckets)
    return [laid_runs(starts, keys, edges[b], edges[b + 1], salt) for b in range(buckets)]


def pool_of(laid: Laid, samples: int, partitions: int, q: int, starts: np.ndarray | None = None) -> t.Any:
    """Partition q's pool of an epoch laid out by ``laid_buckets`` (canonical positions, in visiting
    order before the window shuffle) and where in it each curriculum bucket after the first starts;
    with ``starts`` (the runs' first positions) also each sample's run."""
    edges = bucket_bounds(samples, len(laid))
    pieces, runs = [], []
    for b, (firsts, lengths) in enumerate(laid):
        bounds = pool_bounds(edges[b + 1] - edges[b], partitions)
        piece = cut_runs(firsts, lengths, bounds[q], bounds[q + 1], starts)
        piece, run = piece if starts is not None else (piece, None)
        pieces.append(piece[::-1] if q % 2 == 0 else piece)  # neighbours meet at their shared block
        if run is not None:
            runs.append(run[::-1] if q % 2 == 0 else run)
    pool = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    cuts = np.cumsum([len(piece) for piece in pieces[:-1]], dtype=np.int64)
    if starts is None:
        return pool, cuts
    return pool, cuts, np.concatenate(runs) if len(runs) > 1 else runs[0]


def pool_totals(laid: Laid, samples: int, partitions: int, cumulative: np.ndarray) -> np.ndarray:
    """Each partition's sum of a per-sample value over its pool of an epoch laid out by
    ``laid_buckets`` (``cumulative``: the value's running sum over canonical positions, from 0),
    from the runs alone: O(runs), without the pools' positions."""
    edges = bucket_bounds(samples, len(laid))
    totals = np.zeros(partitions, dtype=np.int64)
    for b, (firsts, lengths) in enumerate(laid):
        bounds = np.asarray(pool_bounds(edges[b + 1] - edges[b], partitions), dtype=np.int64)
        if not len(lengths):
            continue
        ends = np.cumsum(lengths)
        per_run = np.concatenate(([0], np.cumsum(cumulative[firsts + lengths] - cumulative[firsts])))
        i = np.minimum(np.searchsorted(ends, bounds, side="right"), len(lengths) - 1)  # the run holding each bound
        inside = np.clip(bounds - (ends[i] - lengths[i]), 0, lengths[i])
        totals += np.diff(per_run[i] + cumulative[firsts[i] + inside] - cumulative[firsts[i]])
    return totals


def pool(starts: np.ndarray, keys: np.ndarray, samples: int, buckets: int, partitions: int, q: int, salt: int
         ) -> tuple[np.ndarray, np.ndarray]:
    """Partition q's pool of one epoch: O(runs + pool size) (``laid_buckets``, then ``pool_of``)."""
    return pool_of(laid_buckets(starts, keys, samples, buckets, salt), samples, partitions, q)


def ordered_pool(laid: Laid, starts: np.ndarray, keys: np.ndarray, samples: int, partitions: int, seed: int,
                 window: int, component: int, q: int, epoch: int, upto: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Partition q's pool in visiting order (canonical positions) and the run of each, with the
    windows of ``window_shuffle`` (window starts, each block's window and key). With ``upto``, the
    order only as far as the window holding sample ``upto - 1``: the same prefix, at least ``upto``
    long (windows stay in place, so the ones after it need not be shuffled)."""
    pool, cuts, run = pool_of(laid, samples, partitions, q, starts)
    order, window_starts, block_window, block_key = window_shuffle(run, keys, window, seed, (component, q, epoch), cuts,
                                                                   upto)
    return pool[order], run[order], window_starts, block_window, block_key


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _sort_windows(key: np.ndarray, window_id: np.ndarray, starts: np.ndarray | None) -> None:
    """Sort ``key`` in place, where keys of a later window are always larger: pieces of whole
    windows (about ``SORT_PIECE`` keys each, fitting the caches) sort on their own, on the
    machine's cores (NumPy's sort releases the GIL). ``starts``: where each window starts, when known."""
    n = len(key)
    if n <= SORT_PIECE:
        key.sort()
        return
    if starts is None:
        starts = np.concatenate(([0], np.flatnonzero(np.diff(window_id)) + 1))
    edges = np.unique(starts[np.searchsorted(starts, np.arange(0, n, SORT_PIECE), side="right") - 1]).tolist() + [n]
    pieces = list(zip(edges[:-1], edges[1:]))
    if len(pieces) == 1:
        key.sort()
        return
    with concurrent.futures.ThreadPoolExecutor(min(cores(), len(pieces)), thread_name_prefix="mixsql-shuffle") as pool:
        list(pool.map(lambda ab: key[ab[0]: ab[1]].sort(), pieces))


def shuffle_order(window_id: np.ndarray, random: np.ndarray, samples: int | None = None,
                  last_window: int | None = None, window_starts: np.ndarray | None = None) -> np.ndarray:
    """The order that sorts samples by (window, random bits, position): windows stay in place,
    samples shuffle within them. Where window, bits and position fit in 64 bits with at least 24
    random bits, one sort of packed keys (NumPy sorts plain integers far faster than it argsorts);
    else a lexsort by the same three keys with 24 random bits, which gives the same definition.

    ``window_id`` and ``random`` may be the prefix of a pool that ends at a window's end, with
    ``samples`` the pool's length and ``last_window`` its last window: the bit widths are the
    pool's, so the order is the prefix of the pool's order. ``window_starts``: where each of its
    windows starts, when known. ``random`` is overwritten.
    """
    n = len(window_id)
    total = n if samples is None else samples
    last = (int(window_id[-1]) if n else 0) if last_window is None else last_window
    position_bits = max(1, (total - 1).bit_length())
    window_bits = max(1, last.bit_length())
    random_bits = max(24, 64 - position_bits - window_bits)
    if position_bits + window_bits + random_bits <= 64:
        key = random  # built in place: (window, random bits, position) packed into 64 bits
        key >>= _U(64 - random_bits)
        key <<= _U(position_bits)
        key |= np.arange(n, dtype=_U)
        key |= window_id << _U(64 - window_bits)
        _sort_windows(key, window_id, window_starts)
        key &= _U((1 << position_bits) - 1)
        return key.view(np.int64)
    return np.lexsort((np.arange(n), random >> _U(64 - random_bits), window_id))


def window_shuffle(block: np.ndarray, run_key: np.ndarray, window: int, seed: int, index: t.Sequence[int],
                   cuts: np.ndarray | None = None, upto: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle samples within windows of ``window`` consecutive blocks (``block``: each sample's run id);
    a window also starts at each of ``cuts`` (where a curriculum bucket starts), so none spans two.

    Returns the order (with ``upto``, only through the window holding sample ``upto - 1``), the
    window starts, and for each block of the pool its window and its key.
    """
    n = len(block)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    new_block = np.ones(n, dtype=bool)
    np.not_equal(block[1:], block[:-1], out=new_block[1:])
    if cuts is not None:
        cuts = cuts[cuts < n]  # a bucket with nothing in this pool starts nothing
        new_block[cuts] = True
    firsts = np.flatnonzero(new_block)  # where each block starts; the rest is counted per block
    del new_block
    if window == 1:
        window_block = np.ones(len(firsts), dtype=bool)
    else:
        block_no = np.arange(len(firsts), dtype=np.int64)
        if cuts is not None and len(cuts):  # counted from each bucket's start
            segment = np.zeros(len(firsts), dtype=bool)
            segment[0] = True
            segment[np.searchsorted(firsts, cuts)] = True
            block_no -= np.maximum.accumulate(np.where(segment, block_no, 0))
        window_block = block_no % window == 0
    block_window = np.cumsum(window_block) - 1  # each block's window
    window_starts = firsts[window_block]
    end = n
    if upto is not None and upto < n:  # through the end of the window holding sample upto - 1
        following = int(np.searchsorted(window_starts, max(upto, 0), side="left"))
        end = int(window_starts[following]) if following < len(window_starts) else n
    windows = int(np.searchsorted(window_starts, end, side="left"))  # the windows in [0, end)
    sizes = np.diff(np.append(window_starts[:windows], end))
    window_id = np.repeat(np.arange(windows, dtype=_U), sizes)
    order = shuffle_order(window_id, random_keys(seed, WINDOW_SHUFFLE, index, end), n, len(window_starts) - 1,
                          window_starts[:windows])
    return order, window_starts, block_window, run_key[block[firsts]]


def visiting_order(starts: np.ndarray, keys: np.ndarray, samples: int, buckets: int, partitions: int, seed: int,
                   window: int, dataset: int, component: int, q: int, epoch: int, laid: Laid | None = None) -> np.ndarray:
    """Canonical positions of component ``component``'s samples in partition q's pool of ``epoch``,
    in visiting order (window shuffle included): what a plan stores for the epochs it keeps.
    ``laid``: the epoch's ``laid_buckets``, when already computed for another partition."""
    if laid is None:
        laid = laid_buckets(starts, keys, samples, buckets, epoch_salt(seed, dataset, epoch))
    return ordered_pool(laid, starts, keys, samples, partitions, seed, window, component, q, epoch)[0]

"""Near-duplicate detection for the dataset builder: MinHash over word 3-gram shingles, banded LSH.

Built for 100k inputs in a few seconds on one core, so the per-document Python work is kept to almost nothing:
- words are hashed in bulk over the bytes of a whole chunk of documents (ASCII-lower-cased; a word is a run of
  letters, digits, "_" and non-ASCII bytes) with a polynomial hash computed by prefix sums;
- MinHash signatures use datasketch's affine32 scheme exactly (its permutations for `num_perm`/`seed`, the
  MurmurHash3 pre-mix, the min over shingles): a signature equals `MinHash(num_perm, seed, hashfunc=int)
  .update_batch(shingles(text))`, which a test checks;
- LSH uses the bands x rows that datasketch's `MinHashLSH` picks for the threshold, but buckets all documents at
  once with numpy; only documents that share a bucket with another are looked at one by one, and a candidate
  counts only when its estimated Jaccard similarity reaches the threshold (a test checks the pairs found equal
  those of `MinHashLSH`). `MinHashLSH` itself costs ~37 us per document in query+insert calls, 3.7 s per 100k.

`DEFAULT_THRESHOLD` = 0.7, from bench/workloads/measure_near_dups.py (exact Jaccard of all pairs; recall of this
module's LSH on synthetic near-copies: case/space changes, one typo, one added line, one changed number):
- bundled order emails (1,200): distinct inputs are never alike (nearest-neighbour Jaccard max 0.40, p99 0.35);
  copies are caught 99.2-100% at 0.7, but only 88-91% at 0.8 (MinHash estimates scatter by ~0.05 at 64
  permutations, so a threshold close to the copies' true similarity, ~0.87-0.9, loses many).
- debian-sections (2,400 short descriptions): copies caught 91-100% at 0.7 (75-94% at 0.8); 147 distinct
  inputs (6%) are flagged at 0.7 (69 at 0.8): template families such as tesseract-ocr-<language> or
  freedict-<pair>, 97% of them with the same section - the over-weighting near-dedup is for.
Near-copies with a different output are kept by the builder, so a lower threshold never loses an informative
example; it only groups more inputs for the split.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 0.7
NUM_PERM = 64
MINHASH_SEED = 1
SCHEME = "affine32"
CHUNK_BYTES = 1 << 20  # ~170k words: a (shingles x 64) uint32 matrix of ~45 MB per chunk

_M32 = np.uint64(0xFFFFFFFF)
_K1, _K2 = np.uint64(0x9E3779B1), np.uint64(0x85EBCA77)  # odd multipliers mixing 3 word hashes into one
_P = 0x100000001B3  # odd base of the polynomial word hash (mod 2^64), so it has an inverse
_P_INV = pow(_P, -1, 1 << 64)
_LOWER = bytes(c + 32 if 65 <= c <= 90 else c for c in range(256))
_IS_WORD = np.array([chr(c).isalnum() or c == 95 if c < 128 else True for c in range(256)], dtype=bool)


def input_text(value: Any) -> str:
    """The text of a task input for similarity: its string and number leaves in order, field names left out
    (they are the same in every input and would make all short inputs look alike)."""
    parts: list[str] = []
    _leaves(value, parts)
    return "\n".join(parts)


def _leaves(value: Any, out: list[str]) -> None:
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    if items is None:
        if value is not None:
            out.append(value if isinstance(value, str) else str(value))
        return
    for item in items:
        if isinstance(item, str):  # the common leaf, without a call
            out.append(item)
        else:
            _leaves(item, out)


# -- reference definitions (plain Python; the bulk path must agree with these) ------------------------------------


def word_hashes(text: str) -> list[int]:
    """32-bit hash of each word of `text` (the reference for the bulk path)."""
    data = text.encode().translate(_LOWER)
    words, cur = [], bytearray()
    for byte in data + b"\n":
        if _IS_WORD[byte]:
            cur.append(byte)
        elif cur:
            words.append(bytes(cur))
            cur = bytearray()
    return [_fold(sum((c + 1) * pow(_P, i, 1 << 64) for i, c in enumerate(w)) % (1 << 64)) for w in words]


def shingles(text: str) -> list[int]:
    """The 32-bit word 3-gram hashes of `text`; shorter texts are padded with zero words to one 3-gram."""
    w = word_hashes(text)
    w += [0] * max(0, 3 - len(w))
    k1, k2 = int(_K1), int(_K2)
    return [(a * k1 + b * k2 + c) & 0xFFFFFFFF for a, b, c in zip(w, w[1:], w[2:])]


def _fold(h: int) -> int:
    return (h ^ (h >> 32)) & 0xFFFFFFFF


# -- bulk signatures -------------------------------------------------------------------------------------------------


def signatures(texts: Sequence[str], *, num_perm: int = NUM_PERM, seed: int = MINHASH_SEED) -> np.ndarray:
    """MinHash signatures (len(texts) x num_perm, uint32) of the texts' word 3-gram shingles."""
    a, b = permutations(num_perm, seed)
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    done, chunk, size = 0, [], 0
    for text in texts:
        data = text.encode()
        chunk.append(data)
        size += len(data) + 1
        if size >= CHUNK_BYTES:
            out[done : done + len(chunk)] = _chunk_signatures(chunk, a, b)
            done, chunk, size = done + len(chunk), [], 0
    if chunk:
        out[done:] = _chunk_signatures(chunk, a, b)
    return out


def _chunk_signatures(docs: list[bytes], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    words, doc_of = _chunk_word_hashes(docs)
    n_words = np.bincount(doc_of, minlength=len(docs))
    first = np.cumsum(n_words) - n_words
    # every 3 consecutive words of one document make a shingle; documents of < 3 words get one, zero-padded
    inside = np.flatnonzero(doc_of[:-2] == doc_of[2:]) if len(words) >= 3 else np.zeros(0, dtype=np.int64)
    short = np.flatnonzero(n_words < 3)
    padded = np.zeros((len(short), 3), dtype=np.uint64)
    for k in range(3):
        has = n_words[short] > k
        padded[has, k] = words[first[short][has] + k]
    grams = np.concatenate(
        (_gram(words[inside], words[inside + 1], words[inside + 2]), _gram(padded[:, 0], padded[:, 1], padded[:, 2]))
    )
    owner = np.concatenate((doc_of[inside], short))
    order = np.argsort(owner, kind="stable")
    hv = _fmix32(grams[order].astype(np.uint32))
    permuted = np.multiply.outer(a, hv)  # (num_perm, shingles); uint32 arithmetic wraps: a*h + b mod 2^32
    permuted += b[:, None]
    starts = np.cumsum(np.bincount(owner, minlength=len(docs))) - np.bincount(owner, minlength=len(docs))
    return np.minimum.reduceat(permuted, starts, axis=1).T  # every document owns >= 1 shingle


def _gram(w0: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    return (w0 * _K1 + w1 * _K2 + w2) & _M32


def _chunk_word_hashes(docs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word in the chunk, in order, and the index of the document each belongs to."""
    data = b"\n".join(docs).translate(_LOWER)
    arr = np.frombuffer(data, dtype=np.uint8)
    edges = np.diff(np.concatenate(([0], _IS_WORD[arr].view(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    powers, inverse = _powers(len(arr) + 1)
    weighted = (arr.astype(np.uint64) + np.uint64(1)) * powers[: len(arr)]
    prefix = np.concatenate((np.zeros(1, dtype=np.uint64), np.cumsum(weighted, dtype=np.uint64)))
    h = (prefix[ends] - prefix[starts]) * inverse[starts]  # each word's hash as if it started at 0 (wraps mod 2^64)
    h = (h ^ (h >> np.uint64(32))) & _M32
    doc_starts = np.cumsum([0] + [len(d) + 1 for d in docs[:-1]])
    return h, np.searchsorted(doc_starts, starts, side="right") - 1


@lru_cache(maxsize=4)
def _powers_cached(n: int) -> tuple[np.ndarray, np.ndarray]:
    base, inv = np.full(n, _P, dtype=np.uint64), np.full(n, _P_INV, dtype=np.uint64)
    base[0] = inv[0] = 1
    return np.cumprod(base, dtype=np.uint64), np.cumprod(inv, dtype=np.uint64)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    size = 1 << max(16, (n - 1).bit_length())  # round up, so chunks of similar size share one table
    return _powers_cached(size)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer: the pre-mix datasketch's affine32 scheme applies to every input hash."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


@lru_cache(maxsize=8)
def permutations(num_perm: int = NUM_PERM, seed: int = MINHASH_SEED) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a, b) for `num_perm` and `seed`."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
    return np.asarray(a, dtype=np.uint32), np.asarray(b, dtype=np.uint32)


@lru_cache(maxsize=32)
def lsh_params(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows) that datasketch's MinHashLSH chooses for this threshold (equal weight to misses and false hits)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


# -- the index -------------------------------------------------------------------------------------------------------


class NearDupIndex:
    """Banded LSH over a fixed set of signatures, filled in order: `nearest(i)` looks only at documents `add`ed
    before, so the earliest of a group of near-duplicates is the one the others are measured against."""

    def __init__(self, sigs: np.ndarray, threshold: float = DEFAULT_THRESHOLD):
        self.sigs = sigs
        self.threshold = threshold
        self.bands, self.rows = lsh_params(threshold, sigs.shape[1])
        self._labels = np.empty((len(sigs), self.bands), dtype=np.int64)
        shared = np.zeros(len(sigs), dtype=bool)
        for band in range(self.bands):
            block = np.ascontiguousarray(sigs[:, band * self.rows : (band + 1) * self.rows])
            keys = block.view(np.dtype((np.void, block.dtype.itemsize * self.rows))).ravel()
            _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
            self._labels[:, band] = inverse
            shared |= counts[inverse] > 1
        self.shared = shared  # documents that share a bucket with another: the only ones worth a look
        self._members: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]

    def nearest(self, i: int) -> tuple[int, float] | None:
        """The earlier added document most similar to document i, if its estimated Jaccard >= threshold."""
        if not self.shared[i]:
            return None
        cands = {j for band in range(self.bands) for j in self._members[band].get(int(self._labels[i, band]), ())}
        best: tuple[int, float] | None = None
        for j in sorted(cands):
            sim = float(np.count_nonzero(self.sigs[j] == self.sigs[i])) / self.sigs.shape[1]
            if sim >= self.threshold and (best is None or sim > best[1]):
                best = (j, sim)
        return best

    def add(self, i: int) -> None:
        if self.shared[i]:
            for band in range(self.bands):
                self._members[band].setdefault(int(self._labels[i, band]), []).append(i)

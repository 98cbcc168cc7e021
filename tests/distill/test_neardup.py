"""Near-duplicate detection: bulk MinHash equals datasketch's, banded LSH finds what MinHashLSH finds."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH

from protege.demo.workload import load_examples
from protege.distill import neardup
from protege.distill.neardup import NearDupIndex, input_text, lsh_params, shingles, signatures

ODD_TEXTS = ["", "   ", "one", "Two words", "a b c", "Ünïcödé — straße 3x!", "x" * 5000, "line\nbreaks\tand, punct."]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [input_text(e["input"]) for e in load_examples()[:300]] + ODD_TEXTS


def test_bulk_signatures_equal_datasketch_minhash(texts, monkeypatch):
    """Each bulk signature equals datasketch's MinHash of the same shingles, also across many small chunks."""
    monkeypatch.setattr(neardup, "CHUNK_BYTES", 2000)  # force dozens of chunk boundaries
    sigs = signatures(texts)
    for text, sig in zip(texts, sigs):
        m = MinHash(num_perm=neardup.NUM_PERM, seed=neardup.MINHASH_SEED, hashfunc=int)
        m.update_batch(shingles(text))
        assert np.array_equal(m.hashvalues, sig), text[:40]
    monkeypatch.setattr(neardup, "CHUNK_BYTES", 1 << 20)
    assert np.array_equal(signatures(texts), sigs)


def test_similarity_ignores_case_and_spacing_but_not_content():
    """Case and whitespace changes give identical signatures; a different text does not."""
    a, b, c = signatures(
        ["Please SHIP  three chairs\nto Denver", "please ship three chairs to denver", "please ship nine lamps to Oslo"]
    )
    assert np.array_equal(a, b)
    assert np.mean(a == c) < 0.2


def test_input_text_keeps_values_not_field_names():
    """Field names are the same in every input, so only values count; nesting and numbers are flattened."""
    assert input_text({"email": {"subject": "Hi", "body": "x"}, "n": 3, "tags": ["a", None]}) == "Hi\nx\n3\na"


def test_banded_index_finds_what_datasketch_lsh_finds(texts):
    """On originals plus planted near-copies, the bands/rows and the near pairs match datasketch's MinHashLSH."""
    rng = random.Random(0)
    base = texts[:200]
    copies = [t.replace("the", "teh", 1) + rng.choice(["\nThanks!", "", " Best, J."]) for t in base[:80]]
    corpus = base + copies
    sigs = signatures(corpus)
    threshold = 0.7
    assert lsh_params(threshold) == (
        MinHashLSH(threshold=threshold, num_perm=64).b,
        MinHashLSH(threshold=threshold, num_perm=64).r,
    )
    ours, theirs = _pairs_ours(sigs, threshold), _pairs_datasketch(sigs, threshold)
    assert ours == theirs
    found = {(i, 200 + i) for i in range(80)} & ours  # LSH is probabilistic: nearly every planted copy is found
    assert len(found) >= 76


def _pairs_ours(sigs: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    index = NearDupIndex(sigs, threshold)
    pairs = set()
    for i in range(len(sigs)):
        match = index.nearest(i)
        if match is not None:
            pairs.add((match[0], i))
        else:
            index.add(i)
    return pairs


def _pairs_datasketch(sigs: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    """The same sequential policy with datasketch's own index: query, confirm by estimated Jaccard, insert if new."""
    lsh = MinHashLSH(threshold=threshold, num_perm=sigs.shape[1])
    pairs = set()
    for i, sig in enumerate(sigs):
        mh = LeanMinHash(seed=neardup.MINHASH_SEED, hashvalues=sig, scheme="affine32")
        scored = [(float(np.mean(sigs[j] == sig)), -j) for j in lsh.query(mh)]
        scored = [s for s in scored if s[0] >= threshold]
        if scored:
            pairs.add((-max(scored)[1], i))
        else:
            lsh.insert(i, mh)
    return pairs

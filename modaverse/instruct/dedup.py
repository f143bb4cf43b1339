"""Near-duplicate records: MinHash LSH (datasketch) over word 3-grams, per set of media.

Chat models repeat themselves, more so at scale. Two records are near-duplicates when they
are about the same media files (in order) and the Jaccard similarity of their word 3-grams
(instruction, reply text and generator prompts, lower-cased) reaches the threshold. The
same question about two different files is not a duplicate: each 3-gram is tagged with the
record's media, so records about different files share none.

LSH makes a lookup independent of how many records are kept, so it scales to millions of
records where pairwise comparison would not. LSH candidates are confirmed with the exact
Jaccard similarity of 64-bit shingle hashes, so a flagged pair really is that similar.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
from datasketch import MinHash, MinHashLSH

from modaverse.data.records import Record

NUM_PERM = 64
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def _text(record: Record) -> str:
    parts = []
    for m in record.messages:
        if m.role == "user":
            parts.append(m.text)
        else:
            parts.append(m.meta_response.text)
            parts += [f"{inv.capability} {inv.prompt}" for inv in m.meta_response.invocations]
    return " ".join(parts)


def shingles(record: Record) -> np.ndarray:
    """Sorted unique 64-bit hashes of the record's word 3-grams, each tagged with its media."""
    words = _WORD.findall(_text(record).lower())
    media = "|".join(ref.path for ref in record.media())
    grams = {f"{media}#{' '.join(words[i:i + 3])}" for i in range(max(1, len(words) - 2))}
    hashes = [int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") for g in grams]
    return np.unique(np.array(hashes, dtype=np.uint64))


SCHEME = "affine64"  # the permutation scheme for 64-bit input hashes


class NearDuplicates:
    """An index of kept records: :meth:`admit` keeps a record unless it nearly repeats a kept one."""

    def __init__(self, threshold: float = 0.8):
        if not 0 < threshold <= 1:
            raise ValueError(f"the near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self._sets: dict[str, np.ndarray] = {}
        # Drawing the permutations is most of a MinHash's set-up cost; they are the same for all.
        self._permutations = MinHash(num_perm=NUM_PERM, scheme=SCHEME).permutations

    def __len__(self) -> int:
        return len(self._sets)

    def admit(self, key: str, record: Record) -> str | None:
        """Keeps the record under ``key`` and returns None, or returns the id it nearly repeats."""
        grams = shingles(record)
        minhash = MinHash(num_perm=NUM_PERM, hashfunc=int, permutations=self._permutations, scheme=SCHEME)
        minhash.update_batch(grams)
        for other_key in self._lsh.query(minhash):
            other = self._sets[other_key]
            shared = len(np.intersect1d(grams, other, assume_unique=True))
            if shared / (len(grams) + len(other) - shared) >= self.threshold:
                return other_key
        self._sets[key] = grams
        self._lsh.insert(key, minhash)
        return None

"""Which validation windows of a text corpus a training window copies or nearly copies.

The text builders drop those windows, so that the validation split measures text the model has
not seen. "Nearly" is data/overlap.py's near-duplicate test: token-3-gram Jaccard >=
NEAR_DUPLICATE_JACCARD, candidates from its MinHash bands, then the exact Jaccard. Exact copies
are found first by their hashes (they would pass the test anyway), which keeps runs of identical
windows (blank padding, a licence header) from making a quadratic number of candidate pairs.

Both arrays are read in chunks, so memory-mapped windows larger than memory do: what is kept is 8
bytes per training window and 168 per validation window (its exact hash and band keys).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from data import overlap


def _shingles(windows: np.ndarray) -> np.ndarray:
    return overlap.sequence_shingles({"inputs": windows[:, :-1], "targets": windows[:, 1:]})


def _exact(windows: np.ndarray) -> np.ndarray:
    return overlap.exact_hashes({"window": windows}, ("window",))


def _chunks(windows: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(windows), overlap.CHUNK):
        yield np.asarray(windows[start : start + overlap.CHUNK])


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    shared = len(np.intersect1d(a, b, assume_unique=True))
    return shared / (len(a) + len(b) - shared)


def near_copies(rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """[len(rows)] bool: the rows (windows [E, W]) that some reference row (windows [N, W])
    equals or has at shingle Jaccard >= the threshold. Neither may be empty."""
    row_exact = np.concatenate([_exact(chunk) for chunk in _chunks(rows)])
    reference_exact = np.concatenate([_exact(chunk) for chunk in _chunks(reference)])
    copies = np.isin(row_exact, reference_exact)
    open_rows = np.flatnonzero(~copies)
    if len(open_rows) == 0:
        return copies
    keys = np.concatenate(
        [
            overlap.band_keys(overlap.minhash(_shingles(rows[open_rows[s : s + overlap.CHUNK]])))
            for s in range(0, len(open_rows), overlap.CHUNK)
        ]
    )  # [len(open_rows), NUM_BANDS]
    order = np.argsort(keys, axis=0, kind="stable")
    sorted_keys = np.take_along_axis(keys, order, axis=0)
    row_sets: dict[int, np.ndarray] = {}
    for chunk in _chunks(reference):
        # Rows that repeat within the chunk are one candidate: their sets are the same.
        _, first = np.unique(_exact(chunk), return_index=True)
        chunk = chunk[np.sort(first)]
        shingles = _shingles(chunk)
        chunk_keys = overlap.band_keys(overlap.minhash(shingles))
        pairs = set()
        for band in range(overlap.NUM_BANDS):
            low = np.searchsorted(sorted_keys[:, band], chunk_keys[:, band], side="left")
            high = np.searchsorted(sorted_keys[:, band], chunk_keys[:, band], side="right")
            for j in np.flatnonzero(high > low):
                pairs.update((int(i), int(j)) for i in order[low[j] : high[j], band])
        for i, j in sorted(pairs):
            row = open_rows[i]
            if copies[row]:
                continue
            if row not in row_sets:
                row_sets[row] = np.unique(_shingles(np.asarray(rows[row : row + 1]))[0])
            if _jaccard(row_sets[row], np.unique(shingles[j])) >= overlap.NEAR_DUPLICATE_JACCARD:
                copies[row] = True
    return copies

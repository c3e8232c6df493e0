"""Train/eval overlap: which evaluation examples the model may already have seen in training.

Computed once at preparation (see `data.prepare`) and stored as the fingerprint's `overlap`
entry; `python -m launch.datacheck --data=<name>` prints it, and a study report raises an alert
for a leaking dataset.

What counts as the same example. The key is the model's input: for sequence data `inputs` and
`targets` (in next-token data the targets are the inputs shifted by one, so together they are the
example's whole token stream), never `loss_mask` (a weighting, not content). For images it is the
image alone, without the label: an evaluation image that was trained on has been seen whatever
label it carried, and the same image under two labels is a worse problem, not a smaller one.

Two tests, both in one streaming pass per split:
- Exact: a 64-bit blake2b digest of the key's bytes. Exact duplicates within the train split are
  counted as the examples that repeat an earlier one.
- Near: MinHash signatures estimate the Jaccard similarity of two examples' shingle sets; a pair
  is a near-duplicate when that similarity is at least NEAR_DUPLICATE_JACCARD (0.8). Shingles are
  token 3-grams for sequences (one changed token changes at most 3 of them), and for images
  position-tagged 2x2 patches of the image shrunk to at most 16x16 cells, min-max normalised and
  quantised to 8 levels (a pixel-grid comparison that tolerates noise below a level and a
  brightness or contrast change, unlike an 8x8 average hash: on scikit-learn's digits, a
  binarised 8x8 hash puts most images of the same digit within the threshold of one another,
  these shingles put no two of its 1,797 images above 0.42). Candidate pairs come from LSH
  banding (20 bands of 6 minhashes: a pair at similarity s shares a band with probability
  1 - (1 - s^6)^20, 0.998 at s = 0.8, 0.015 at 0.3); each evaluation example keeps its most
  similar candidate, which is verified with the exact Jaccard of the two shingle sets (read back
  from the data) when the estimate is within VERIFY_MARGIN of the threshold.

Cost: linear in the number of examples. Train examples stream through in chunks against an index
of the evaluation split; what is kept is 8 bytes per train example and about 0.8 KB per
evaluation example (its signature and band keys). All hashing constants derive from fixed
strings, so the result is the same on every machine and numpy version.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from data.builder import ArchlabBuilder, cast_example, declared_dtypes

VERSION = 1  # bump when the method changes: prepared fingerprints are then recomputed
NEAR_DUPLICATE_JACCARD = 0.8
SEQUENCE_SHINGLE_TOKENS = 3
IMAGE_GRID = 16  # images larger than this many cells a side are block-averaged down to it
IMAGE_LEVELS = 8
IMAGE_PATCH = 2
NUM_BANDS = 20
ROWS_PER_BAND = 6
NUM_PERMUTATIONS = NUM_BANDS * ROWS_PER_BAND
# Candidates whose estimate is this close below the threshold are checked exactly too: the
# estimate's standard deviation at s = 0.8 with 120 permutations is sqrt(0.8 * 0.2 / 120) = 0.037.
VERIFY_MARGIN = 0.15
MAX_VERIFIED = 20_000  # beyond this many candidates (a badly leaking split) the estimate decides
MAX_MATCHES_PER_BAND = 8  # evaluation examples one train example can meet in one band bucket
MAX_SHOWN = 5  # example index pairs recorded for a person to look at
CHUNK = 1024  # examples read and hashed at a time
_SLAB_ELEMENTS = 1 << 21  # bounds the (rows, shingles, permutations) intermediate to 16 MB

# The features that make up the model's input, by DatasetSpec.kind.
INPUT_FEATURES = {"sequence": ("inputs", "targets"), "image": ("image",)}


def _constants(name: str, count: int) -> np.ndarray:
    """`count` 64-bit constants from blake2b of fixed strings: identical everywhere, unlike a
    numpy generator whose streams may change between versions."""
    digests = b"".join(
        hashlib.blake2b(f"archlab-overlap-{name}-{i}".encode(), digest_size=8).digest()
        for i in range(count)
    )
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


# Multiply-add-shift hashing (Dietzfelbinger): ((sum_k a_k x_k + b) mod 2^64) >> 32 is a strongly
# universal hash of 32-bit values x_k. numpy's uint64 arrays wrap modulo 2^64, which is the mod.
_SHINGLE_MULTIPLIERS = _constants("shingle", 8)
_PERMUTATION_A = _constants("permutation-a", NUM_PERMUTATIONS)
_PERMUTATION_B = _constants("permutation-b", NUM_PERMUTATIONS)
_BAND_MULTIPLIERS = _constants("band", ROWS_PER_BAND)


def _hash_vectors(values: np.ndarray) -> np.ndarray:
    """A 32-bit hash (as uint64) of each vector along the last axis of `values` (width <= 7)."""
    width = values.shape[-1]
    words = values.astype(np.uint32).astype(np.uint64)  # negative ints wrap: still distinct
    mixed = (words * _SHINGLE_MULTIPLIERS[:width]).sum(axis=-1, dtype=np.uint64)
    return (mixed + _SHINGLE_MULTIPLIERS[width]) >> np.uint64(32)


# ----------------------------------------------------------------------------------- shingles
def sequence_shingles(batch: dict[str, np.ndarray]) -> np.ndarray:
    """[B, S] shingle ids: the union of the token n-grams of `inputs` and of `targets`."""
    inputs, targets = (batch[key].reshape(len(batch[key]), -1) for key in ("inputs", "targets"))
    n = min(SEQUENCE_SHINGLE_TOKENS, inputs.shape[1], targets.shape[1])  # short: one shingle
    if inputs.shape == targets.shape and np.array_equal(inputs[:, 1:], targets[:, :-1]):
        # Next-token data: targets are the inputs shifted by one, and the union of their n-grams
        # is the n-grams of the whole stream. The same set from half the shingles.
        streams = [np.concatenate([inputs, targets[:, -1:]], axis=1)]
    else:
        streams = [inputs, targets]
    windows = [np.lib.stride_tricks.sliding_window_view(s, n, axis=1) for s in streams]
    return np.concatenate([_hash_vectors(w) for w in windows], axis=1)


def _shrink(gray: np.ndarray) -> np.ndarray:
    """[B, H, W] -> [B, <=IMAGE_GRID, <=IMAGE_GRID] by averaging blocks of pixels."""
    for axis in (1, 2):
        size = gray.shape[axis]
        if size > IMAGE_GRID:
            starts = (np.arange(IMAGE_GRID) * size) // IMAGE_GRID
            counts = np.diff(np.append(starts, size))
            shape = [1, 1, 1]
            shape[axis] = IMAGE_GRID
            gray = np.add.reduceat(gray, starts, axis=axis) / counts.reshape(shape)
    return gray


def image_shingles(batch: dict[str, np.ndarray]) -> np.ndarray:
    """[B, S] shingle ids: every 2x2 patch of the shrunk, normalised, quantised image, tagged with
    its position (so the set is a picture, not a bag of textures)."""
    images = batch["image"].astype(np.float64)
    gray = _shrink(images.mean(axis=-1) if images.ndim == 4 else images)
    low = gray.min(axis=(1, 2), keepdims=True)
    span = np.maximum(gray.max(axis=(1, 2), keepdims=True) - low, 1e-12)
    levels = np.minimum(((gray - low) / span * IMAGE_LEVELS).astype(np.int64), IMAGE_LEVELS - 1)
    p = min(IMAGE_PATCH, *levels.shape[1:])
    patches = np.lib.stride_tricks.sliding_window_view(levels, (p, p), axis=(1, 2))
    batch_size, rows, cols = patches.shape[:3]
    patches = patches.reshape(batch_size, rows * cols, p * p)
    position = np.broadcast_to(np.arange(rows * cols)[None, :, None], (batch_size, rows * cols, 1))
    return _hash_vectors(np.concatenate([position, patches], axis=-1))


SHINGLES: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {
    "sequence": sequence_shingles,
    "image": image_shingles,
}


# ------------------------------------------------------------------------------- signatures
def exact_hashes(batch: dict[str, np.ndarray], keys: tuple[str, ...]) -> np.ndarray:
    """[B] uint64: blake2b of each example's key bytes (per example, but ~1 us against ~100 us to
    read it; the 64 bits make a chance collision among 10^6 examples a 1-in-10^7 event)."""
    rows = [np.ascontiguousarray(batch[k]).reshape(len(batch[k]), -1) for k in keys]
    digests = b"".join(
        hashlib.blake2b(b"".join(row[i].tobytes() for row in rows), digest_size=8).digest()
        for i in range(len(rows[0]))
    )
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def minhash(shingles: np.ndarray) -> np.ndarray:
    """[B, S] shingle ids -> [B, NUM_PERMUTATIONS] uint32 MinHash signatures."""
    num_rows, num_shingles = shingles.shape
    slab = max(1, _SLAB_ELEMENTS // (num_shingles * NUM_PERMUTATIONS))
    out = np.empty((num_rows, NUM_PERMUTATIONS), dtype=np.uint32)
    for start in range(0, num_rows, slab):
        hashed = shingles[start : start + slab, :, None] * _PERMUTATION_A
        hashed += _PERMUTATION_B
        # The shift is monotone, so it can follow the min: one pass over the big array fewer.
        out[start : start + slab] = hashed.min(axis=1) >> np.uint64(32)
    return out


def band_keys(signatures: np.ndarray) -> np.ndarray:
    """[B, NUM_PERMUTATIONS] -> [B, NUM_BANDS] uint64: one hash of each band's minhashes. Two
    examples are candidates when any band key is equal."""
    bands = signatures.reshape(len(signatures), NUM_BANDS, ROWS_PER_BAND).astype(np.uint64)
    return (bands * _BAND_MULTIPLIERS).sum(axis=-1, dtype=np.uint64)


# ---------------------------------------------------------------------------------- reading
def _batches(builder: ArchlabBuilder, split: str) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(index of the first example, the stacked features) for each chunk of the split."""
    source, dtypes = builder.as_data_source(split), declared_dtypes(builder)
    for start in range(0, len(source), CHUNK):
        yield start, _read(source, dtypes, range(start, min(start + CHUNK, len(source))))


def _read(source: Any, dtypes: dict[str, np.dtype], indices: Any) -> dict[str, np.ndarray]:
    examples = [cast_example(e, dtypes) for e in source.__getitems__(list(indices))]
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


# ----------------------------------------------------------------------------- the comparison
@dataclasses.dataclass
class _EvalIndex:
    """One evaluation split's signatures, band keys sorted per band, and the best train match
    found so far for each of its examples."""

    exact: np.ndarray  # [E] uint64
    signatures: np.ndarray  # [E, P] uint32
    sorted_keys: np.ndarray  # [NUM_BANDS, E] uint64, each band's keys sorted
    order: np.ndarray  # [NUM_BANDS, E] example index of each sorted key
    best_similarity: np.ndarray  # [E] estimated Jaccard of the best train candidate, -1 if none
    best_train: np.ndarray  # [E] its train index, -1 if none

    @classmethod
    def build(cls, exact: np.ndarray, signatures: np.ndarray) -> _EvalIndex:
        keys = band_keys(signatures).T  # [NUM_BANDS, E]
        order = np.argsort(keys, axis=1, kind="stable")
        return cls(
            exact=exact,
            signatures=signatures,
            sorted_keys=np.take_along_axis(keys, order, axis=1),
            order=order,
            best_similarity=np.full(len(exact), -1.0),
            best_train=np.full(len(exact), -1, dtype=np.int64),
        )

    def candidates(self, train_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(train row, eval index) pairs that share a band key: a sort-merge join per band."""
        train_rows, eval_indices = [], []
        for band in range(NUM_BANDS):
            keys = self.sorted_keys[band]
            low = np.searchsorted(keys, train_keys[:, band], side="left")
            count = np.minimum(
                np.searchsorted(keys, train_keys[:, band], side="right") - low,
                MAX_MATCHES_PER_BAND,
            )
            rows = np.repeat(np.arange(len(train_keys)), count)
            offset = np.arange(len(rows)) - np.repeat(np.cumsum(count) - count, count)
            train_rows.append(rows)
            eval_indices.append(self.order[band][np.repeat(low, count) + offset])
        return np.concatenate(train_rows), np.concatenate(eval_indices)

    def update(self, first_train_index: int, train_signatures: np.ndarray) -> None:
        """Raises each evaluation example's best match with this chunk of train examples."""
        rows, evals = self.candidates(band_keys(train_signatures))
        if len(rows) == 0:
            return
        similarity = (train_signatures[rows] == self.signatures[evals]).mean(axis=1)
        # Best candidate per evaluation example: highest similarity, then lowest train index.
        order = np.lexsort((rows, -similarity, evals))
        evals, rows, similarity = evals[order], rows[order], similarity[order]
        first = np.flatnonzero(np.r_[True, evals[1:] != evals[:-1]])
        evals, rows, similarity = evals[first], rows[first], similarity[first]
        better = similarity > self.best_similarity[evals]
        self.best_similarity[evals[better]] = similarity[better]
        self.best_train[evals[better]] = first_train_index + rows[better]


def _signatures(batch: dict[str, np.ndarray], kind: str) -> tuple[np.ndarray, np.ndarray]:
    return exact_hashes(batch, INPUT_FEATURES[kind]), minhash(SHINGLES[kind](batch))


def _sign_split(builder: ArchlabBuilder, split: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    parts = [_signatures(batch, kind) for _, batch in _batches(builder, split)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _fraction(count: int, total: int) -> float:
    return round(count / total, 6) if total else 0.0


def train_duplicates(train_exact: np.ndarray) -> dict[str, Any]:
    """Exact duplicates within train: the examples that repeat an earlier one."""
    _, first_index, inverse = np.unique(train_exact, return_index=True, return_inverse=True)
    first_of = first_index[inverse]
    repeats = np.flatnonzero(first_of != np.arange(len(train_exact)))
    return {
        "count": int(len(repeats)),
        "fraction": _fraction(len(repeats), len(train_exact)),
        "examples": [{"train": int(i), "repeats": int(first_of[i])} for i in repeats[:MAX_SHOWN]],
    }


def exact_matches(eval_exact: np.ndarray, train_exact: np.ndarray) -> np.ndarray:
    """[E] the first train index with the same exact hash, or -1."""
    order = np.argsort(train_exact, kind="stable")
    sorted_hashes = train_exact[order]
    position = np.minimum(np.searchsorted(sorted_hashes, eval_exact), len(order) - 1)
    found = sorted_hashes[position] == eval_exact
    return np.where(found, order[position], -1)


def _shingle_sets(
    builder: ArchlabBuilder, split: str, kind: str, indices: np.ndarray
) -> dict[int, np.ndarray]:
    source, dtypes = builder.as_data_source(split), declared_dtypes(builder)
    unique = np.unique(indices)
    shingles = SHINGLES[kind](_read(source, dtypes, unique.tolist()))
    return {int(i): np.unique(row) for i, row in zip(unique, shingles, strict=True)}


def verify(
    builder: ArchlabBuilder,
    kind: str,
    eval_split: str,
    eval_indices: np.ndarray,
    train_indices: np.ndarray,
) -> np.ndarray:
    """Exact Jaccard similarity of each (eval, train) pair's shingle sets, read back from the
    data. A loop over the candidates only: at most MAX_VERIFIED of them."""
    evals = _shingle_sets(builder, eval_split, kind, eval_indices)
    trains = _shingle_sets(builder, builder.spec().train_split, kind, train_indices)
    similarity = np.empty(len(eval_indices))
    for n, (e, t) in enumerate(zip(eval_indices.tolist(), train_indices.tolist(), strict=True)):
        a, b = evals[e], trains[t]
        shared = len(np.intersect1d(a, b, assume_unique=True))
        similarity[n] = shared / (len(a) + len(b) - shared)
    return similarity


def near_duplicates(
    builder: ArchlabBuilder, kind: str, eval_split: str, index: _EvalIndex, exact: np.ndarray
) -> dict[str, Any]:
    """Evaluation examples that are not exact copies but have a train example at Jaccard >= the
    threshold (verified exactly where the candidate is within VERIFY_MARGIN of it)."""
    similarity = index.best_similarity.copy()
    to_verify = np.flatnonzero(
        (exact < 0) & (similarity >= NEAR_DUPLICATE_JACCARD - VERIFY_MARGIN)
    )[:MAX_VERIFIED]
    if len(to_verify):
        similarity[to_verify] = verify(
            builder, kind, eval_split, to_verify, index.best_train[to_verify]
        )
    near = np.flatnonzero((exact < 0) & (similarity >= NEAR_DUPLICATE_JACCARD))
    return {
        "count": int(len(near)),
        "fraction": _fraction(len(near), len(exact)),
        "verified": int(len(to_verify)),
        "examples": [
            {
                "eval": int(e),
                "train": int(index.best_train[e]),
                "jaccard": round(float(similarity[e]), 4),
            }
            for e in near[:MAX_SHOWN]
        ],
    }


def _exact_summary(exact: np.ndarray) -> dict[str, Any]:
    hits = np.flatnonzero(exact >= 0)
    return {
        "count": int(len(hits)),
        "fraction": _fraction(len(hits), len(exact)),
        "examples": [{"eval": int(e), "train": int(exact[e])} for e in hits[:MAX_SHOWN]],
    }


def method() -> dict[str, Any]:
    """What the numbers mean, recorded beside them."""
    return {
        "version": VERSION,
        "exact": "blake2b-64 of the input features (sequences: inputs+targets; images: image)",
        "near": "MinHash estimate of shingle-set Jaccard, LSH banding, exact check near threshold",
        "jaccard_threshold": NEAR_DUPLICATE_JACCARD,
        "sequence_shingle_tokens": SEQUENCE_SHINGLE_TOKENS,
        "image_shingles": f"{IMAGE_PATCH}x{IMAGE_PATCH} patches of <= {IMAGE_GRID}x{IMAGE_GRID} "
        f"cells, {IMAGE_LEVELS} levels",
        "permutations": NUM_PERMUTATIONS,
        "bands": NUM_BANDS,
    }


def compute(builder: ArchlabBuilder) -> dict[str, Any]:
    """The `overlap` entry of a prepared dataset's fingerprint (JSON-serialisable).

    `leak` is True when any evaluation example is an exact or near duplicate of a train example:
    there is no fraction below which overlap is ignored, as one leaked example can be the one a
    claim rests on, and the counts let the reader judge the size.
    """
    spec = builder.spec()
    kind, train_split = spec.kind, spec.train_split
    eval_splits = [s for s in sorted(spec.splits) if s != train_split]
    indexes = {split: _EvalIndex.build(*_sign_split(builder, split, kind)) for split in eval_splits}
    train_exact = []
    for start, batch in _batches(builder, train_split):
        exact, signatures = _signatures(batch, kind)
        train_exact.append(exact)
        for index in indexes.values():
            index.update(start, signatures)
    train_exact = np.concatenate(train_exact)

    evals = {}
    for split, index in indexes.items():
        exact = exact_matches(index.exact, train_exact)
        evals[split] = {
            "examples": len(index.exact),
            "exact": _exact_summary(exact),
            "near": near_duplicates(builder, kind, split, index, exact),
        }
    return {
        "method": method(),
        "train_split": train_split,
        "train_examples": len(train_exact),
        "train_duplicates": train_duplicates(train_exact),
        "eval": evals,
        "leak": any(e["exact"]["count"] + e["near"]["count"] > 0 for e in evals.values()),
    }

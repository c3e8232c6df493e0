"""A text corpus on disk: the files some globs name, their documents, and each document's split.

A document is a whole `.txt`, `.md` or `.py` file, one line of a `.jsonl` file (its `text_field`)
or one row of a `.parquet` file (its `text_field` column); empty documents are skipped. Files are
read as bytes and decoded as strict UTF-8 (no newline translation), so a document's bytes are the
file's bytes.

Identity is content, not location: the files are ordered by the sha256 of their bytes, and the
corpus digest is taken over those hashes, so the same files under other names or in another folder
make the same corpus. Each document goes to the validation split when a hash of its own text falls
below `val_fraction` (see `in_validation`): adding files never moves an old document across the
split, and identical documents always land on the same side.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from data.config import DataConfigError

WHOLE_FILE_SUFFIXES = (".txt", ".md", ".py")
RECORD_SUFFIXES = (".jsonl", ".parquet")
SUFFIXES = WHOLE_FILE_SUFFIXES + RECORD_SUFFIXES
_PARQUET_BATCH = 1024  # rows read at a time: bounds memory for files larger than it


@dataclasses.dataclass(frozen=True)
class CorpusFile:
    path: Path
    sha256: str
    size: int


def resolve(globs: Sequence[str], what: str) -> list[Path]:
    """The files the globs match (`**` reaches into subfolders), each once, sorted. `what` names
    the parameter in errors. A glob matching no file, or a file of another kind, is an error."""
    if not globs:
        raise DataConfigError(f"{what} is empty: give globs of {', '.join(SUFFIXES)} files")
    found: set[Path] = set()
    for pattern in globs:
        matches = [Path(m) for m in glob.glob(os.path.expanduser(pattern), recursive=True)]
        files = [m for m in matches if m.is_file()]
        if not files:
            raise DataConfigError(f"{what}: {pattern!r} matches no file")
        found.update(m.resolve() for m in files)
    unsupported = sorted(str(p) for p in found if p.suffix not in SUFFIXES)
    if unsupported:
        raise DataConfigError(
            f"{what}: {unsupported[0]!r} is not a corpus file ({len(unsupported)} such); "
            f"valid kinds: {', '.join(SUFFIXES)}"
        )
    return sorted(found)


def split_globs(paths: str) -> list[str]:
    """'a/*.txt, b/**/*.jsonl' -> ['a/*.txt', 'b/**/*.jsonl']."""
    return [p.strip() for p in paths.split(",") if p.strip()]


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def hash_files(paths: Sequence[Path]) -> list[CorpusFile]:
    """The files with their content hashes, in corpus order (by hash: location plays no part)."""
    files = [CorpusFile(p, _file_sha256(p), p.stat().st_size) for p in paths]
    return sorted(files, key=lambda f: (f.sha256, str(f.path)))


def digest(files: Sequence[CorpusFile]) -> str:
    """sha256 over the files' content hashes in corpus order."""
    lines = "".join(f"{f.sha256} {f.size}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def in_validation(text: str, val_fraction: float) -> bool:
    """Whether a document belongs to the validation split: the first 8 bytes of its blake2b,
    read as a fraction of 2**64, fall below val_fraction. A function of the document alone."""
    key = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=b"archlab-split")
    return int.from_bytes(key.digest(), "little") < val_fraction * 2**64


def documents(files: Sequence[CorpusFile], text_field: str) -> Iterator[tuple[CorpusFile, str]]:
    """(file, document text) for every non-empty document, in corpus order. A file whose bytes
    no longer match its recorded hash is an error: the variant's name promised those bytes."""
    for file in files:
        if _file_sha256(file.path) != file.sha256:
            raise DataConfigError(
                f"{file.path} changed after the dataset's files were hashed; run again"
            )
        for text in _READERS[file.path.suffix](file.path, text_field):
            if text:
                yield file, text


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataConfigError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from e


def _whole_file(path: Path, text_field: str) -> Iterator[str]:
    del text_field  # the file is the document
    yield _decode(path.read_bytes(), str(path))


def _jsonl_records(path: Path, text_field: str) -> Iterator[str]:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(_decode(line, where))
            except json.JSONDecodeError as e:
                raise DataConfigError(f"{where}: not a JSON object ({e.msg})") from e
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                fields = sorted(record) if isinstance(record, dict) else []
                raise DataConfigError(
                    f"{where}: no string field {text_field!r} (text_field); "
                    f"fields: {', '.join(fields) or 'none'}"
                )
            yield text


def _parquet_rows(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq  # only needed for parquet corpora

    table = pq.ParquetFile(path)
    names = table.schema_arrow.names
    if text_field not in names:
        raise DataConfigError(
            f"{path}: no column {text_field!r} (text_field); columns: {', '.join(names)}"
        )
    for batch in table.iter_batches(batch_size=_PARQUET_BATCH, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            if text is not None and not isinstance(text, str):
                raise DataConfigError(f"{path}: column {text_field!r} holds {type(text).__name__}")
            yield text or ""


_READERS: dict[str, Callable[[Path, str], Iterator[str]]] = {
    **dict.fromkeys(WHOLE_FILE_SUFFIXES, _whole_file),
    ".jsonl": _jsonl_records,
    ".parquet": _parquet_rows,
}

"""text_files: a language-modelling corpus from the user's own files.

Data sheet
- Source: the files that `paths` names: one glob or several separated by commas (`**` reaches
  into subfolders; `~` is expanded; relative globs are read from the working directory). A
  `.txt`, `.md` or `.py` file is one document; a `.jsonl` file holds one document per line, the
  string field `text_field` of its JSON object; a `.parquet` file one per row, its column
  `text_field`. Files must be UTF-8; empty documents are skipped. Nothing is downloaded.
- What the data is, its license and its intended use are the user's to state: this sheet covers
  only how it is made. The fingerprint records the number of files, the sha256 of their
  contents (data/corpus.py: location and names play no part), documents, bytes and tokens per
  split, and the tokenizer's kind, size and sha256.
- Generation (data/text_corpus.py): each document goes to the validation split when a hash of its
  text falls below `val_fraction`, so adding files never moves an old document across the split;
  documents are tokenised (`tokenizer`: byte, bpe with `vocab_size` trained on the train split,
  or a tokenizer.json), packed with an end-of-document token into windows of seq_len + 1 tokens,
  and the validation windows that a training window copies or nearly copies are dropped.
- License: as the files'.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tensorflow_datasets as tfds

from data import corpus
from data.config import text_param
from data.registry import DATASETS
from data.text_corpus import TextCorpusBuilder, TextCorpusConfig


@dataclasses.dataclass(eq=False)
class TextFilesConfig(TextCorpusConfig):
    paths: str = text_param("", "p")
    text_field: str = text_param("text", "f")

    DATASET = "text_files"

    def corpus_paths(self) -> list[Path]:
        return corpus.resolve(corpus.split_globs(self.paths), "data.text_files.paths")

    def record_field(self) -> str:
        return self.text_field


@DATASETS.register("text_files")
class TextFiles(TextCorpusBuilder):
    CONFIG_CLASS = TextFilesConfig
    VERSION = tfds.core.Version("1.0.0")
    LICENSE = "As the corpus files' (the user's own data)."

    def source(self) -> str:
        kinds = sorted({f.path.suffix for f in self.config.files})
        return f"local files ({', '.join(kinds)}) named by data.text_files.paths"

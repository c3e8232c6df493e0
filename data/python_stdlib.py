"""python_stdlib: the Python source of the running interpreter's standard library, as a text corpus.

Data sheet
- Source: every `.py` file under the standard library folder of the Python that prepares the data
  (`sysconfig.get_paths()["stdlib"]`), without `site-packages`, the test suites (folders named
  `test`, `tests`, `idle_test`), the build's configuration (`_sysconfigdata_*.py`, `config-*/`)
  and, unless named, the `encodings` package (about 120 generated character-map codecs: 1.4 MB
  of near-identical tables, not written code). `modules` picks top-level modules and packages
  by name instead of `all`. Nothing is downloaded: every machine with Python has it.
- Size: about 10.7 MB of UTF-8 in about 610 files on CPython 3.11.7 (code, docstrings and
  comments: real, varied, English-commented Python). The text depends on the Python version and
  build: the fingerprint's `source` names the version, and the sha256 of the files' contents
  (`files_sha256`) and the content hash change with the text.
- Generation (data/text_corpus.py): one document per file; a document goes to the validation
  split when a hash of its text falls below `val_fraction`; tokenised by `tokenizer` (byte, a BPE
  with `vocab_size` trained on the train split, or a tokenizer.json), packed with an
  end-of-document token into windows of seq_len + 1 tokens; validation windows that a training
  window copies or nearly copies (licence headers, repeated code) are dropped.
- Intended use: a real, always-available corpus for comparing language-model architectures and
  tokenizers offline (bits per byte). Code is not prose: what is learnt here says little about
  natural language.
- License: the Python Software Foundation License Version 2 (PSF-2.0; the CPython source
  distribution, whose LICENSE file is in the same folder). Some modules carry their own
  compatible notices in their headers.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import platform
import sysconfig
from pathlib import Path

import tensorflow_datasets as tfds

from data.config import DataConfigError, text_param
from data.registry import DATASETS
from data.text_corpus import TextCorpusBuilder, TextCorpusConfig

EXCLUDED_FOLDERS = ("site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__")
# Left out of `all` (but available by name): about 120 generated character-map codecs, 1.4 MB
# of near-identical tables rather than written code.
NOT_IN_ALL = ("encodings",)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _excluded_folder(name: str) -> bool:
    return name in EXCLUDED_FOLDERS or name.startswith("config-")


def stdlib_files() -> dict[str, list[Path]]:
    """Top-level module or package name -> its .py files, sorted (see the data sheet)."""
    root = stdlib_root()
    modules: dict[str, list[Path]] = {}
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not _excluded_folder(d))
        for name in sorted(names):
            if name.endswith(".py") and not name.startswith("_sysconfigdata"):
                path = Path(folder) / name
                top = path.relative_to(root).parts[0].removesuffix(".py")
                modules.setdefault(top, []).append(path)
    return modules


@dataclasses.dataclass(eq=False)
class PythonStdlibConfig(TextCorpusConfig):
    # all, or top-level modules and packages separated by commas (e.g. "json,email")
    modules: str = text_param("all", "m")

    DATASET = "python_stdlib"

    def corpus_paths(self) -> list[Path]:
        available = stdlib_files()
        if self.modules == "all":
            return sorted(
                p for name, paths in available.items() if name not in NOT_IN_ALL for p in paths
            )
        chosen = [m.strip() for m in self.modules.split(",") if m.strip()]
        for name in chosen:
            if name not in available:
                near = difflib.get_close_matches(name, available, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise DataConfigError(
                    f"python_stdlib: no standard-library module {name!r} in modules{hint}; "
                    f"valid: all, or any of {', '.join(sorted(available))}"
                )
        if not chosen:
            raise DataConfigError("python_stdlib: modules is empty; give all or module names")
        return sorted(p for name in chosen for p in available[name])


@DATASETS.register("python_stdlib")
class PythonStdlib(TextCorpusBuilder):
    CONFIG_CLASS = PythonStdlibConfig
    VERSION = tfds.core.Version("1.0.0")
    LICENSE = "Python Software Foundation License Version 2 (PSF-2.0)."

    def source(self) -> str:
        implementation = platform.python_implementation()
        modules = "" if self.config.modules == "all" else f" (modules: {self.config.modules})"
        return (
            f"{implementation} {platform.python_version()} standard library source (.py files, "
            f"without tests and site-packages){modules}"
        )

"""The dataset registry: `data.name` in a config is looked up here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry import Registry

if TYPE_CHECKING:  # only for the annotation; builder.py imports this module's neighbours
    from data.builder import ArchlabBuilder

DATASETS: Registry[type[ArchlabBuilder]] = Registry("dataset")

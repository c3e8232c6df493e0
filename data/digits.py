"""digits: scikit-learn's 8x8 handwritten digits (the UCI optical-recognition test set).

Data sheet
- Source: `sklearn.datasets.load_digits()`, which ships inside the scikit-learn package (no
  download); originally the UCI ML "Optical Recognition of Handwritten Digits" data (Alpaydin &
  Kaynak, 1998), 43 writers.
- Size: 1797 grayscale 8x8 images, 10 classes (about 180 per class). Default split: 1497 train /
  300 test.
- Generation: pixel counts 0..16 are scaled by 1/16 to float32 in [0, 1] and stored as
  (8, 8, 1) images with int32 labels. The split is a fixed permutation (numpy PCG64, seed 0) of
  the 1797 rows: the first `test_examples` rows are the test split, the rest train.
- Group attribute: `group` 0 ("light ink") or 1 ("heavy ink"), for the evaluation suite's group
  gaps: an image is heavy when its total ink (sum of pixel values) is above the median ink of
  the images of its class (computed over all 1797 images before splitting). Splitting within
  each class keeps both groups' class mix equal, so a gap measures writing style, not class
  difficulty. A proxy for writer style built from the pixels: the data carries no writer id.
- Intended use: a seconds-fast image-classification task for smoke tests and end-to-end tests
  of non-sequence models; far too small and easy to rank architectures on.
- License: CC BY 4.0 (UCI ML repository); distributed with scikit-learn (BSD-3-Clause).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data.builder import ArchlabBuilder
from data.config import DataConfigError, ParamsConfig, param
from data.registry import DATASETS
from data.spec import DatasetSpec

_NUM_IMAGES = 1797
_IMAGE_SHAPE = (8, 8, 1)
_SPLIT_SEED = 0  # fixed: the split must not depend on the training seed


GROUP_NAMES = ("light_ink", "heavy_ink")


def ink_groups(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1 where an image's total ink is above the median of its class, else 0 (see data sheet)."""
    ink = images.reshape(len(images), -1).sum(axis=1)
    groups = np.zeros(len(images), np.int32)
    for label in np.unique(labels):
        members = labels == label
        groups[members] = ink[members] > np.median(ink[members])
    return groups


@dataclasses.dataclass(eq=False)
class DigitsConfig(ParamsConfig):
    test_examples: int = param(300, "e")

    def validate(self) -> None:
        if not 1 <= self.test_examples < _NUM_IMAGES:
            raise DataConfigError(
                f"digits: need 1 <= test_examples < {_NUM_IMAGES}; got {self.params()}"
            )


@DATASETS.register("digits")
class Digits(ArchlabBuilder):
    CONFIG_CLASS = DigitsConfig
    # 1.1.0 added the `group` feature: data prepared by 1.0.0 lacks it, so it is not reused.
    VERSION = tfds.core.Version("1.1.0")
    LICENSE = "CC BY 4.0 (UCI ML repository), via scikit-learn (BSD-3-Clause)."

    def _features(self) -> tfds.features.FeaturesDict:
        return tfds.features.FeaturesDict(
            {
                "image": tfds.features.Tensor(shape=_IMAGE_SHAPE, dtype=np.float32),
                "label": tfds.features.Tensor(shape=(), dtype=np.int32),
                "group": tfds.features.Tensor(shape=(), dtype=np.int32),
            }
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # the data ships with scikit-learn
        from sklearn.datasets import load_digits  # heavy import, only needed to prepare

        digits = load_digits()
        images = (digits.images / 16.0).astype(np.float32).reshape(-1, *_IMAGE_SHAPE)
        labels = digits.target.astype(np.int32)
        groups = ink_groups(images, labels)
        order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
        test, train = order[: self.config.test_examples], order[self.config.test_examples :]
        return {
            "train": self._generate_examples(images[train], labels[train], groups[train]),
            "test": self._generate_examples(images[test], labels[test], groups[test]),
        }

    def _generate_examples(
        self, images: np.ndarray, labels: np.ndarray, groups: np.ndarray
    ) -> Iterator[tuple[int, dict]]:
        for i, (image, label, group) in enumerate(zip(images, labels, groups, strict=True)):
            yield i, {"image": image, "label": label, "group": group}

    def slice_attributes(
        self, batch: dict[str, np.ndarray], rows: np.ndarray, positions: np.ndarray
    ) -> dict[str, np.ndarray]:
        del positions
        return {"group": np.array(GROUP_NAMES)[batch["group"][rows]]}

    def spec(self) -> DatasetSpec:
        return DatasetSpec(
            name=self.name,
            kind="image",
            splits=self.split_sizes(),
            eval_split="test",
            num_classes=10,
            image_shape=_IMAGE_SHAPE,
        )

    def data_sheet(self) -> dict[str, Any]:
        return {
            "source": "sklearn.datasets.load_digits (UCI optical recognition of handwritten "
            "digits), bundled with scikit-learn",
            "size": f"{_NUM_IMAGES} images of 8x8x1, 10 classes",
        }

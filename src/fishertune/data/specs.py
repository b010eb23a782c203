"""Dataset specs: the text users write (``folder:PATH`` or ``<dataset>:ROOT[:split[:option]]``) as a typed
``DatasetSpec``, and what a spec resolves to on disk (``DatasetFiles``); and ``holdout:N``, the source
validation slice that ``data.val`` may name instead of a spec (``HoldOut``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fishertune.data.layouts import DATASETS, DatasetLayout, Pair, folder_pairs, require_dir
from fishertune.errors import FisherTuneError
from fishertune.registry import suggestion, unknown_name

HOLDOUT_PREFIX = "holdout:"
HOLDOUT_SEED = 0
"""Seed of the held-out draw: fixed, not train.seed, so every seed and method validates on one slice."""


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed, checked spec. ``split`` and ``option`` are filled in with the dataset's defaults, so
    ``str(spec)`` (the canonical text) records e.g. which Mapillary label table is used."""

    dataset: str
    root: Path
    split: str | None = None
    option: str | None = None

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        name, sep, rest = str(text).partition(":")
        if not sep or not rest:
            raise FisherTuneError(f"bad dataset spec '{text}': expected folder:PATH or "
                                  f"<dataset>:ROOT[:split]")
        if name == "folder":
            return cls("folder", Path(rest))
        if str(text).startswith(HOLDOUT_PREFIX):
            raise FisherTuneError(f"'{text}' is not a dataset: holdout:N names a held-out slice of the "
                                  f"training sources, for data.val only")
        if name not in DATASETS:
            raise unknown_name("dataset", name, ["folder", *DATASETS])
        layout = DATASETS[name]
        fields = rest.split(":")
        if len(fields) > 3:
            raise FisherTuneError(f"bad dataset spec '{text}': at most ROOT:split:option after the name")
        split = fields[1] if len(fields) > 1 and fields[1] else layout.default_split
        split = layout.split_aliases.get(split, split)
        option = fields[2] if len(fields) > 2 and fields[2] else layout.default_option
        for kind, value, valid in (("split", split, layout.splits), ("option", option, layout.options)):
            if value is not None and value not in valid:
                raise FisherTuneError(f"{name} has no {kind} {value!r}{suggestion(value, valid)}")
        return cls(name, Path(fields[0]), split, option)

    @property
    def layout(self) -> DatasetLayout | None:
        return DATASETS.get(self.dataset)

    @property
    def labelled(self) -> bool:
        return self.layout is None or self.split not in self.layout.unlabelled_splits

    @property
    def name(self) -> str:
        """Display name: the folder's name for a folder spec, else the dataset with the split and option
        where they are not the defaults (``acdc-night``, ``cityscapes-train``, ``mapillary-rein``)."""
        if self.layout is None:
            return self.root.resolve().name
        parts = (self.dataset, None if self.split == self.layout.default_split else self.split,
                 None if self.option == self.layout.default_option else self.option)
        return "-".join(part for part in parts if part)

    def __str__(self) -> str:
        if self.layout is None:
            return f"folder:{self.root}"
        return ":".join([self.dataset, str(self.root), self.split, *([self.option] if self.option else [])])


def canonical(text: str) -> str:
    """The canonical text of a spec (defaults written out), checked without touching the disk."""
    return str(DatasetSpec.parse(text))


def canonical_val(text: str) -> str:
    """The canonical text of a source validation set: a spec, or ``holdout:N`` (see `HoldOut`)."""
    holdout = HoldOut.parse(text)
    return canonical(text) if holdout is None else str(holdout)


@dataclass(frozen=True)
class DatasetFiles:
    """What a spec resolves to: the spec, the pairs, and label files that have no image (found for folder
    specs, whose label folder holds nothing else)."""

    spec: DatasetSpec
    pairs: list[Pair]
    labels_without_images: list[Path]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def root(self) -> Path:
        return self.spec.root

    @property
    def label_table(self) -> str:
        """How the stored label values became train ids (several when the files are mixed)."""
        return ", ".join(sorted({pair.table for pair in self.pairs if pair.label is not None})) or "none"


def resolve_spec(spec: str | DatasetSpec) -> DatasetFiles:
    """Parse a spec and find its files (the images and where their labels should be)."""
    spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.parse(spec)
    if spec.layout is None:
        pairs, orphans = folder_pairs(spec.root)
        return DatasetFiles(spec, pairs, orphans)
    require_dir(spec.root)
    return DatasetFiles(spec, spec.layout.pairs(spec.root, spec.split, spec.option), [])


@dataclass(frozen=True)
class HoldOut:
    """``holdout:N``: N images of the training sources kept out of training as the source validation set.

    N is a count (``holdout:500``) or a fraction of the pooled source images (``holdout:0.02``). The
    slice is the first N of a permutation of the pooled images (every source's images in ``data.train``
    order, each source sorted by file name) drawn by a generator seeded with ``HOLDOUT_SEED``: it depends
    on the source files and N only, never on train.seed or the method, and a smaller slice lies inside a
    larger one."""

    amount: int | float

    @classmethod
    def parse(cls, text: str) -> HoldOut | None:
        """The hold-out that ``text`` names, or None when it is a dataset spec."""
        if not str(text).startswith(HOLDOUT_PREFIX):
            return None
        value = str(text).removeprefix(HOLDOUT_PREFIX)
        try:
            amount: int | float = int(value)
            valid = amount >= 1
        except ValueError:
            try:
                amount = float(value)
                valid = 0 < amount < 1
            except ValueError:
                valid = False
        if not valid:
            raise FisherTuneError(f"bad hold-out '{text}': expected holdout:N with N a count of images "
                                  f"(>= 1) or a fraction between 0 and 1")
        return cls(amount)

    def size(self, total: int) -> int:
        """How many of ``total`` pooled source images are held out; at least one, and fewer than all."""
        size = round(self.amount * total) if isinstance(self.amount, float) else self.amount
        if not 1 <= size < total:
            raise FisherTuneError(f"data.val {self} holds out {size} of the {total} training source images: "
                                  f"it must hold out at least 1 and leave some to train on")
        return size

    def indices(self, total: int) -> np.ndarray:
        """Sorted indices into the pooled source images of the held-out slice."""
        return np.sort(np.random.default_rng(HOLDOUT_SEED).permutation(total)[:self.size(total)])

    def __str__(self) -> str:
        return f"{HOLDOUT_PREFIX}{self.amount}"

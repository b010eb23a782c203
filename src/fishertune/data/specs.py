"""Dataset specs: the text users write (``folder:PATH`` or ``<dataset>:ROOT[:split[:option]]``) as a typed
``DatasetSpec``, and what a spec resolves to on disk (``DatasetFiles``)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from fishertune.data.layouts import DATASETS, DatasetLayout, Pair, folder_pairs, require_dir
from fishertune.errors import FisherTuneError

SPLIT_ALIASES = {"mapillary": {"train": "training", "val": "validation"}}


def _nearest(name: str, options) -> str:
    match = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{match[0]}'?)" if match else f" (valid: {', '.join(options)})"


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
        if name not in DATASETS:
            raise FisherTuneError(f"unknown dataset '{name}'" + _nearest(name, ["folder", *DATASETS]))
        layout = DATASETS[name]
        fields = rest.split(":")
        if len(fields) > 3:
            raise FisherTuneError(f"bad dataset spec '{text}': at most ROOT:split:option after the name")
        split = fields[1] if len(fields) > 1 and fields[1] else layout.default_split
        split = SPLIT_ALIASES.get(name, {}).get(split, split)
        option = fields[2] if len(fields) > 2 and fields[2] else layout.default_option
        if split not in layout.splits:
            raise FisherTuneError(f"{name} has no split '{split}'" + _nearest(split, layout.splits))
        if option is not None and option not in layout.options:
            raise FisherTuneError(f"{name} has no option '{option}'"
                                  + (_nearest(option, layout.options) if layout.options else ""))
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

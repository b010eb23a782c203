"""``fishertune data check``: every bad file of a dataset, before a long run trips over one of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fishertune.data.classes import CITYSCAPES, ClassSet
from fishertune.data.image_io import read_image
from fishertune.data.layouts import progress
from fishertune.data.specs import DatasetSpec, resolve_spec
from fishertune.errors import FisherTuneError


@dataclass
class DatasetReport:
    """What ``inspect_dataset`` found: ``problems`` (one line per bad file; any makes the check fail),
    ``notes`` (handled oddities of real datasets: GTAV images resized to their label, BDD100K images
    without a mask skipped), counts, the label table, and the train-id pixel histogram when asked."""

    name: str
    images: int = 0
    labelled: int = 0
    label_table: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    histogram: np.ndarray | None = None
    """[256] pixel count of each train id (255 = ignore), or None."""

    @property
    def verdict(self) -> str:
        if self.problems:
            return f"FAIL: {len(self.problems)} bad file(s) in {self.name}"
        notes = f", {len(self.notes)} note(s)" if self.notes else ""
        return f"OK: every file is fine ({self.name}: {self.images} images, {self.labelled} labelled{notes})"


def check_dataset(spec: str, classes: ClassSet = CITYSCAPES) -> list[str]:
    """One line per problem, naming the file (see ``inspect_dataset``); an empty list means clean."""
    return inspect_dataset(spec, classes=classes).problems


def inspect_dataset(spec: str, histogram: bool = False, classes: ClassSet = CITYSCAPES) -> DatasetReport:
    """Read every image/label pair of a spec.

    Problems: an unreadable image or label, a label whose size differs from its image's (a note for GTAV,
    whose loader resizes the image), label values (after any id -> train-id mapping) outside 0-18 and 255,
    an image without a label (a note for BDD100K, whose loader skips it), a label without an image (folder
    specs), or no images at all. An unlabelled split (ACDC test) has its images checked only. A spec that
    cannot be resolved at all (unknown name, missing folder) raises FisherTuneError. With a custom class
    set (`data.classes`, folder specs only) the values are checked against it instead of 0-18 and 255."""
    if not classes.is_cityscapes and not spec.startswith("folder:"):
        raise FisherTuneError(f"{spec}: data.classes applies to folder: datasets only")
    files = resolve_spec(spec)
    layout = files.spec.layout
    skip_missing = layout is not None and layout.missing_labels == "skip"
    report = DatasetReport(files.name, len(files.pairs), label_table=files.label_table,
                           histogram=np.zeros(256, np.int64) if histogram else None)
    report.problems += [f"{label}: label without an image" for label in files.labels_without_images]
    if not files.pairs:
        report.problems.append(f"{files.root}: no images found")
    shared: dict[Path, list[Path]] = {}
    for pair in files.pairs:
        if pair.label is not None:
            shared.setdefault(pair.label, []).append(pair.image)
    report.problems += [f"{label}: the label of {len(images)} images ({', '.join(p.name for p in images)}); "
                        f"each image needs its own" for label, images in shared.items() if len(images) > 1]
    for pair in progress(files.pairs, f"checking {files.name}"):
        try:
            image_shape = read_image(pair.image).shape[:2]
        except FisherTuneError as error:
            report.problems.append(str(error))
            image_shape = None
        if pair.label is None:
            continue
        if not pair.label.is_file():
            line = f"{pair.image}: image without a label (expected {pair.label})"
            (report.notes if skip_missing else report.problems).append(line + (" - skipped" if skip_missing
                                                                                else ""))
            continue
        try:
            label = pair.reader(pair.label)
        except FisherTuneError as error:
            report.problems.append(str(error))
            continue
        report.labelled += 1
        if image_shape is not None and label.shape != image_shape:
            line = (f"{pair.label}: label is {label.shape[1]}x{label.shape[0]} but the image is "
                    f"{image_shape[1]}x{image_shape[0]}")
            (report.notes if pair.resize_to_label else report.problems).append(
                line + (" - the image is resized to the label" if pair.resize_to_label else ""))
        if pair.label_lut is not None:
            label = pair.label_lut[label.clip(0, len(pair.label_lut) - 1)]
        bad = classes.bad_values(label)
        if bad.size:
            shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
            report.problems.append(f"{pair.label}: label values outside {classes.describe_values()}: {shown}")
        elif report.histogram is not None:
            ids = classes.to_train_ids(label)
            report.histogram += np.bincount(ids.ravel().astype(np.int64), minlength=256)[:256]
    return report


def split_counts(spec: str) -> dict[str, int | None]:
    """{split: number of images} over every split of a registered dataset (None: not on disk); the spec's
    own option is kept. Empty for a folder spec."""
    parsed = DatasetSpec.parse(spec)
    if parsed.layout is None:
        return {}
    counts: dict[str, int | None] = {}
    for split in parsed.layout.splits:
        try:
            one = DatasetSpec(parsed.dataset, parsed.root, split, parsed.option)
            counts[split] = len(resolve_spec(one).pairs)
        except FisherTuneError:
            counts[split] = None
    return counts

"""``fishertune data check``: every bad file of a dataset, before a long run trips over one of them."""

from __future__ import annotations

import numpy as np

from fishertune.data.datasets import resolve_spec
from fishertune.data.image_io import read_image, read_label
from fishertune.data.labels import IGNORE_INDEX, NUM_CLASSES
from fishertune.errors import FisherTuneError


def check_dataset(spec: str) -> list[str]:
    """One line per problem, naming the file: an unreadable image or label, a label whose size differs
    from its image's, label values (after any id -> train-id mapping) outside 0-18 and 255, an image
    without a label, a label without an image (folder specs), or a dataset with no images at all.
    An empty list means the dataset is clean. A spec that cannot be resolved at all (unknown name,
    missing folder) raises FisherTuneError."""
    files = resolve_spec(spec)
    problems = [f"{label}: label without an image" for label in files.labels_without_images]
    if not files.pairs:
        problems.append(f"{files.root}: no images found")
    for pair in files.pairs:
        try:
            image_shape = read_image(pair.image).shape[:2]
        except FisherTuneError as error:
            problems.append(str(error))
            image_shape = None
        if not pair.label.is_file():
            problems.append(f"{pair.image}: image without a label (expected {pair.label})")
            continue
        try:
            label = read_label(pair.label)
        except FisherTuneError as error:
            problems.append(str(error))
            continue
        if image_shape is not None and label.shape != image_shape:
            problems.append(f"{pair.label}: label is {label.shape[1]}x{label.shape[0]} but the image is "
                            f"{image_shape[1]}x{image_shape[0]}")
        if pair.label_lut is not None:
            label = pair.label_lut[label.clip(0, len(pair.label_lut) - 1)]
        values = np.unique(label)
        bad = values[((values < 0) | (values >= NUM_CLASSES)) & (values != IGNORE_INDEX)]
        if bad.size:
            shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
            problems.append(f"{pair.label}: label values outside 0-18 and 255: {shown}")
    return problems

"""Transforms keep image and label aligned, pad with 255, and are reproducible from the generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fishertune.data.datasets import FolderDataset
from fishertune.data.transforms import TrainTransform, adjust_colour, resize


def _encoded(height=40, width=56, block=8):
    """A label of constant blocks and an image whose red channel encodes the label (green is 1 on real
    pixels), so alignment can be read back from the image."""
    ys, xs = np.mgrid[0:height, 0:width]
    label = torch.from_numpy(((ys // block) * 7 + (xs // block) * 3) % 19).long()
    image = torch.stack([label.float() / 18, torch.ones(height, width), torch.rand(height, width)])
    return image, label


@pytest.mark.parametrize("seed", range(6))
def test_crop_flip_and_padding_keep_the_pair_aligned_exactly(seed):
    image, label = _encoded()
    transform = TrainTransform(crop_size=(48, 64), scale_range=(1.0, 1.0), flip_prob=0.5)
    out_image, out_label = transform(image, label, torch.Generator().manual_seed(seed))
    assert out_image.shape == (3, 48, 64) and out_label.shape == (48, 64)
    padded = out_label == 255
    assert padded.any()  # 40x56 into 48x64 needs padding
    assert torch.equal(padded, out_image[1] == 0)
    assert torch.equal(torch.round(out_image[0][~padded] * 18).long(), out_label[~padded])


def _interior_agreement(image, label, window=5):
    """Does the red channel decode to the label on every pixel whose window x window neighbourhood holds a
    single label (block interiors, where resampling cannot mix classes)?"""
    lab = label.float()[None, None]
    pad = window // 2
    high = torch.nn.functional.max_pool2d(lab, window, 1, pad)
    low = -torch.nn.functional.max_pool2d(-lab, window, 1, pad)
    interior = ((high == low)[0, 0]) & (label != 255)
    assert interior.sum() > 50
    return bool((torch.round(image[0][interior] * 18).long() == label[interior]).all())


@pytest.mark.parametrize("seed", range(6))
def test_random_scaling_keeps_block_interiors_aligned(seed):
    image, label = _encoded(64, 64, block=16)
    transform = TrainTransform(crop_size=32, scale_range=(0.5, 2.0), flip_prob=0.5)
    out_image, out_label = transform(image, label, torch.Generator().manual_seed(seed))
    assert _interior_agreement(out_image, out_label)
    # the check is sharp: the same output with the image shifted by 2 pixels fails it
    assert not _interior_agreement(out_image.roll(2, dims=2), out_label)


def test_train_transform_is_deterministic_given_the_generator_and_varies_with_it():
    image, label = _encoded()
    transform = TrainTransform(crop_size=24, jitter=1.0)
    a = transform(image, label, torch.Generator().manual_seed(1))
    b = transform(image, label, torch.Generator().manual_seed(1))
    c = transform(image, label, torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_labels_are_never_interpolated():
    image, label = _encoded()
    _, out = resize(image, label, (33, 47))
    assert set(out.unique().tolist()) <= set(label.unique().tolist())


def test_adjust_colour_identities():
    image = torch.rand(3, 5, 7)
    assert torch.allclose(adjust_colour(image), image, atol=1e-6)
    assert torch.allclose(adjust_colour(image, hue=2 * math.pi), image, atol=1e-5)
    grey = torch.full((3, 4, 4), 0.4)
    assert torch.allclose(adjust_colour(grey, saturation=2.0, hue=1.0), grey, atol=1e-5)
    assert torch.allclose(adjust_colour(image, brightness=0.1, contrast=1.0).mean(),
                          (image + 0.1).clamp(0, 1).mean(), atol=1e-6)


def test_dataset_seeds_each_item_by_seed_epoch_and_index(tmp_path, fabricate):
    write_image, write_label = fabricate
    for name in ("a", "b"):
        write_image(tmp_path / "images" / f"{name}.png", 20, 20, value=50)
        write_label(tmp_path / "labels" / f"{name}.png", [0, 1, 2], 20, 20)
    dataset = FolderDataset(tmp_path, transform=TrainTransform(crop_size=12, jitter=0.5), seed=7)
    first = dataset[0]["label"]
    assert torch.equal(first, dataset[0]["label"])
    crops = {tuple(dataset[0]["label"].flatten().tolist())}
    for epoch in range(1, 6):
        dataset.set_epoch(epoch)
        crops.add(tuple(dataset[0]["label"].flatten().tolist()))
    assert len(crops) > 1
    dataset.set_epoch(0)
    assert torch.equal(first, dataset[0]["label"])

"""Data: the Cityscapes 19-class label space, datasets (folder and official DGSS layouts), transforms,
dataset checking, and the synthetic multi-domain street scenes."""

from fishertune.data.check import check_dataset
from fishertune.data.datasets import DATASETS, FolderDataset, SegmentationDataset, build_dataset
from fishertune.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE, colorize
from fishertune.data.synthetic import DOMAINS, TARGET_DOMAINS, generate, render_scene

__all__ = ["CLASS_NAMES", "DATASETS", "DOMAINS", "IGNORE_INDEX", "NUM_CLASSES", "PALETTE", "TARGET_DOMAINS",
           "FolderDataset", "SegmentationDataset", "build_dataset", "check_dataset", "colorize", "generate",
           "render_scene"]

"""Data: the Cityscapes 19-class label space, datasets (folder and official DGSS layouts), transforms and
dataset checking. The synthetic street scenes of the embedded benchmark are `fishertune.benchmark`."""

from fishertune.data.check import check_dataset
from fishertune.data.datasets import DATASETS, FolderDataset, SegmentationDataset, build_dataset
from fishertune.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE, colorize

__all__ = ["CLASS_NAMES", "DATASETS", "IGNORE_INDEX", "NUM_CLASSES", "PALETTE", "FolderDataset",
           "SegmentationDataset", "build_dataset", "check_dataset", "colorize"]

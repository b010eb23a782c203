"""The label space every package shares: a label map holds class ids 0..C-1 and IGNORE_INDEX.

C is NUM_CLASSES (Cityscapes' 19 train ids, `fishertune.data.labels`) unless a run names its own classes
(`data.classes`, `fishertune.data.classes`); IGNORE_INDEX is the same for every class set.
"""

IGNORE_INDEX = 255
"""The label of pixels that take no part in the loss or the metrics."""
NUM_CLASSES = 19
"""The number of Cityscapes train ids, the default class set."""

"""Method colours: the Okabe-Ito palette, distinguishable with the common colour-vision deficiencies.
(Segmentation maps use the Cityscapes colours of `fishertune.data.labels`.)"""

from __future__ import annotations

OKABE_ITO: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000", "#999999",
)


def method_colors(names) -> dict[str, str]:
    """A fixed colour per method, in order, cycling Okabe-Ito."""
    return {name: OKABE_ITO[i % len(OKABE_ITO)] for i, name in enumerate(names)}

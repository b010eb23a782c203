"""The shipped FisherTune estimate, as a MaskSelectorConfig for a test model (a uniquely named module)."""

from dataclasses import fields

from fishertune import MaskSelectorConfig
from fishertune.tuners.fishertune import FisherTuneTunerConfig


def shipped_selector_config(**overrides) -> MaskSelectorConfig:
    """`FisherTuneTunerConfig()`'s estimate and combination (every MaskSelectorConfig field it sets), with
    `overrides` for what depends on the model (candidates, perturbed layers) or the test (budget)."""
    shipped = FisherTuneTunerConfig()
    options = {f.name: getattr(shipped, f.name) for f in fields(MaskSelectorConfig)}
    options.update(exclude=[], ratio=None, count=None, ratio_min=None, growth_start=None,
                   growth_fraction=None, update_fraction=None)
    return MaskSelectorConfig(**(options | overrides))

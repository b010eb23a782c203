"""FisherTune's shipped defaults live in its tuner: the method yaml sets only what a protocol changes, the
demo runs the tuner as shipped, and the estimates stay a small part of a real protocol's training."""

import pytest
import yaml

from fishertune.engine.config import PACKAGED_CONFIGS, load_config
from fishertune.sparse.mask_selector import estimate_count, passes_per_estimate
from fishertune.tuners.fishertune import SHIPPED, FisherTuneTunerConfig

PROTOCOLS = sorted(p.name for p in (PACKAGED_CONFIGS / "protocols").glob("*.yaml") if p.stem != "synthetic")


def test_the_tuner_owns_the_shipped_defaults():
    shipped = FisherTuneTunerConfig()
    assert {k: getattr(shipped, k) for k in SHIPPED} == SHIPPED
    assert shipped.ratio == 0.05 and shipped.exclude == ["*embeddings*"]
    assert shipped.growth_start and shipped.growth_fraction and shipped.update_fraction
    method_yaml = yaml.safe_load((PACKAGED_CONFIGS / "methods" / "fishertune.yaml").read_text())
    assert "options" not in method_yaml["method"]  # only learning rates and the perturbation
    plan = yaml.safe_load((PACKAGED_CONFIGS / "demo" / "plan.yaml").read_text())
    assert "options" not in plan["variants"]["fishertune"]  # the benchmark runs FisherTune as shipped


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_estimates_cost_at_most_5_percent_of_a_real_protocols_training(protocol, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"base": [f"protocols/{protocol}", "backbones/dinov2_l.yaml",
                                             "methods/fishertune.yaml"]}))
    config = load_config(path)
    t = config.train
    shipped = FisherTuneTunerConfig(**config.method.options)
    estimates = estimate_count(shipped, t.steps)
    passes = estimates * passes_per_estimate(shipped, t.prepare_batches)
    assert estimates == 4  # prepare's, then a re-estimate every quarter of the steps (none after the last)
    assert passes / (t.steps * t.grad_accum) <= 0.05

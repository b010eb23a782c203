"""Fabricated results dicts (the results.json schema of fishertune.run_result) for the report tests."""

import pytest

DOMAINS = ("fog", "night")


def _run(seed, source, fog, night, params, seconds):
    return {"seed": seed, "trainable_params": params, "source_miou": source,
            "target_miou": {"fog": fog, "night": night}, "mean_target_miou": (fog + night) / 2,
            "train_seconds": seconds}


@pytest.fixture
def multi_seed_results():
    """Three methods × three seeds; the baselines list their seeds in a different order than ours."""
    ours = [_run(0, 70.0, 50.0, 40.0, 1000, 61.0), _run(1, 71.0, 52.0, 41.0, 1000, 59.0),
            _run(2, 69.0, 51.0, 45.0, 1000, 60.0)]
    full = [_run(2, 72.0, 49.0, 30.0, 22000000, 80.0), _run(0, 70.5, 47.0, 38.0, 22000000, 81.0),
            _run(1, 70.0, 48.0, 33.0, 22000000, 79.0)]
    frozen = [_run(1, 60.0, 40.0, 20.0, 0, 30.0), _run(0, 61.0, 41.0, 21.0, 0, 31.0),
              _run(2, 62.0, 42.0, 22.0, 0, 29.0)]
    return {"setup": {"backbone": "dinov2_s_offline", "data": "synthetic", "steps": 300, "seeds": [0, 1, 2]},
            "methods": {name: {"trainable_params": runs[0]["trainable_params"], "seeds": runs}
                        for name, runs in (("fishertune", ours), ("full", full), ("frozen", frozen))}}


@pytest.fixture
def single_seed_results():
    return {"fishertune": _run(0, 70.0, 50.0, 40.0, 1_200_000, 61.0),
            "lora": _run(0, 71.0, 48.0, 41.0, 300_000, 55.0)}

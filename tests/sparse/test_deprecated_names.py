"""`FisherTuner` / `FisherTuneConfig`, the old names of MaskSelector / MaskSelectorConfig, until 0.2."""

import subprocess
import sys
import warnings

import pytest
import torch
from tiny_models import TinyViT, classification_loss, make_batches

import fishertune
import fishertune.sparse
from fishertune import MaskSelector, MaskSelectorConfig


def test_the_new_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fishertune.MaskSelector is fishertune.sparse.MaskSelector is MaskSelector
        assert fishertune.MaskSelectorConfig is MaskSelectorConfig
    assert "FisherTuner" not in fishertune.sparse.__all__ and "FisherTuner" not in fishertune.__all__


@pytest.mark.parametrize("module", [fishertune, fishertune.sparse])
def test_the_old_names_warn_where_they_are_used(module):
    with pytest.warns(DeprecationWarning, match="use MaskSelectorConfig") as record:
        assert module.FisherTuneConfig is MaskSelectorConfig
    assert record[0].filename == __file__  # points at the caller, not at fishertune's own code
    with pytest.warns(DeprecationWarning, match=r"use MaskSelector \(after_step now takes"):
        assert issubclass(module.FisherTuner, MaskSelector)
    with pytest.raises(AttributeError, match="no attribute 'FisherTuners'"):
        module.FisherTuners  # noqa: B018


def grown(selector_class, call_after_step):
    """Masks and history of 3 steps with growth after every step, the hook called by `call_after_step`."""
    torch.manual_seed(0)
    model = TinyViT()
    batches = make_batches([2, 2], (3, 8, 8))
    selector = selector_class(model, MaskSelectorConfig(ratio=0.2, ratio_min=0.05, growth_steps=2,
                                                        update_every=1, include=["blocks.*"], score="fim",
                                                        per_sample=False))
    selector.estimate(batches, classification_loss)
    selector.select(0)
    optimizer = selector.build_optimizer(model.named_parameters(), lr=1e-3)
    for step in range(3):
        optimizer.zero_grad()
        classification_loss(model.train(), batches[step % 2]).mean().backward()
        optimizer.step()
        call_after_step(selector, step, 3, batches, optimizer)
    return selector


def test_the_old_class_keeps_its_after_step_argument_order():
    with pytest.warns(DeprecationWarning):
        old_class = fishertune.FisherTuner
    old = grown(old_class, lambda s, step, total, batches, opt:
                s.after_step(step, batches, classification_loss, opt, total_steps=total))
    new = grown(MaskSelector, lambda s, step, total, batches, opt:
                s.after_step(step, total, batches, classification_loss, opt))
    # grown after steps 0 and 1, not after the last one (δ grows, so each update adds entries)
    assert [h["step"] for h in new.history] == [0, 1, 2]
    counts = [h["selected"] for h in new.history]
    assert counts[0] < counts[1] < counts[2]
    assert old.history == new.history
    assert all(torch.equal(old.masks[n], new.masks[n]) for n in new.masks)


def test_the_old_package_name_is_the_sparse_core_and_warns():
    """`fishertune.method` (renamed `fishertune.sparse`) keeps old imports working, with a warning."""
    code = ("import warnings; warnings.simplefilter('always')\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    from fishertune.method.fisher import empirical_fisher\n"
            "    import fishertune.method as old, fishertune.sparse as new, fishertune.sparse.fisher as f\n"
            "assert old is new and empirical_fisher is f.empirical_fisher, 'not the same objects'\n"
            "print([str(x.message) for x in w if x.category is DeprecationWarning])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "fishertune.method is deprecated: import fishertune.sparse instead" in out

"""The fast paths of the segmentor equal their slow references: batched sliding windows, flip TTA,
activation checkpointing; and the model leaves precision to the caller (it never enters autocast)."""

from __future__ import annotations

import pytest
import torch

from fishertune.engine.precision import autocast

HEIGHT, WIDTH = 37, 45


def images(seed=0, b=2):
    return torch.rand(b, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("window_batch", [2, 3, 100])
def test_batched_windows_equal_one_at_a_time(tiny_segmentor, backbone_name, window_batch):
    model = tiny_segmentor(backbone_name, "linear").eval()
    x = images()
    one = model.predict(x, mode="slide", crop=24, stride=10, window_batch=1)
    batched = model.predict(x, mode="slide", crop=24, stride=10, window_batch=window_batch)
    torch.testing.assert_close(batched, one, rtol=1e-5, atol=1e-5)


def test_flip_averages_the_mirrored_scores(tiny_segmentor):
    model = tiny_segmentor("dinov2", "multilevel").eval()
    x = images()
    plain = model.predict(x)
    mirrored = model.predict(x.flip(-1)).flip(-1)
    torch.testing.assert_close(model.predict(x, flip=True), (plain + mirrored) / 2, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain, mirrored)  # the augmentation changes something
    # window columns 0, 10, 20 of a 44 px wide image are their own mirror image: sliding with flip equals
    # the mean of sliding over the image and over its mirror image
    x = x[..., :44]
    slide = model.predict(x, mode="slide", crop=24, stride=10, flip=True, window_batch=4)
    expected = (model.predict(x, mode="slide", crop=24, stride=10)
                + model.predict(x.flip(-1), mode="slide", crop=24, stride=10).flip(-1)) / 2
    torch.testing.assert_close(slide, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="window_batch"):
        model.predict(x, mode="slide", crop=24, stride=16, window_batch=0)


def test_model_never_enters_autocast_on_its_own(tiny_segmentor, monkeypatch):
    model = tiny_segmentor("dinov2", "mask2former")
    seen = []
    for module in (model.backbone, model.head):
        module.register_forward_pre_hook(
            lambda m, a: seen.append(torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")))
    x = images()
    labels = torch.randint(0, 19, (2, HEIGHT, WIDTH))
    model.loss(x, labels).backward()
    model.eval()
    model(x)
    model.predict(x, mode="slide", crop=24, stride=16, flip=True)
    assert seen and not any(seen)
    seen.clear()
    with autocast(torch.device("cpu"), "bf16"):  # the engine's switch is what turns it on
        model.predict(x)
    assert seen and all(seen)
    with autocast(torch.device("cpu"), "off"):
        model.predict(x)
    assert not seen[-1]


def test_activation_checkpointing_gives_the_same_gradients(tiny_segmentor, backbone_name):
    grads = []
    for checkpointing in (False, True):
        model = tiny_segmentor(backbone_name, "multilevel")
        model.backbone.activation_checkpointing = checkpointing
        recomputed = []
        model.backbone.blocks[0].register_forward_pre_hook(lambda m, a, seen=recomputed: seen.append(1))
        labels = torch.randint(0, 19, (2, HEIGHT, WIDTH), generator=torch.Generator().manual_seed(1))
        model.loss(images(), labels).backward()
        assert len(recomputed) == (2 if checkpointing else 1)  # the block ran again in the backward pass
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-6, atol=1e-7, msg=n)

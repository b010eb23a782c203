"""Every backbone x head: build tiny, train step, whole and sliding inference, stable parameter names."""

from __future__ import annotations

import pytest
import torch

HEIGHT, WIDTH = 37, 45  # odd and not multiples of the patch size (4)


def batch(seed: int = 0, b: int = 2, height: int = HEIGHT, width: int = WIDTH):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, height, width, generator=g)
    labels = torch.randint(0, 19, (b, height, width), generator=g)
    labels[0, :10] = 255
    labels[-1, :, :7] = 255
    return images, labels


def test_train_step_and_inference(tiny_segmentor, backbone_name, head_name):
    model = tiny_segmentor(backbone_name, head_name)
    images, labels = batch()
    per_image = model.loss(images, labels, reduction="none")
    assert per_image.shape == (2,) and torch.isfinite(per_image).all() and (per_image > 0).all()
    per_image.mean().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    assert any(p.grad.abs().sum() > 0 for n, p in trainable if n.startswith("backbone.model."))

    model.eval()
    assert model(images).shape[:2] == (2, 19)
    for mode in ("whole", "slide"):
        out = model.predict(images, mode=mode, crop=24, stride=16)
        assert out.shape == (2, 19, HEIGHT, WIDTH) and torch.isfinite(out).all()
    small = model.predict(images[..., :13, :9], mode="slide", crop=24, stride=16)
    assert small.shape == (2, 19, 13, 9) and torch.isfinite(small).all()


def test_per_image_loss_is_per_image_and_ignores_255(tiny_segmentor, head_name):
    """In eval mode, image n's loss depends on image n only; an all-ignore image gives 0; 'mean' averages."""
    model = tiny_segmentor("dinov2", head_name).eval()
    images, labels = batch(b=3)
    labels[1] = 255
    together = model.loss(images, labels, reduction="none")
    alone = torch.cat([model.loss(images[i:i + 1], labels[i:i + 1], reduction="none") for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    assert together[1] == 0 and together[0] > 0 and together[2] > 0
    torch.testing.assert_close(model.loss(images, labels), together.mean())


@pytest.mark.parametrize("head", ["linear", "multilevel"])
def test_pixel_loss_is_mean_ce_over_valid_pixels_of_the_prediction(tiny_segmentor, head):
    """Brute force: loss = mean over non-255 pixels of -log softmax(predict(x))[label], image by image."""
    model = tiny_segmentor("dinov2", head).eval()
    images, labels = batch(b=2, height=32, width=36)
    log_probs = model.predict(images).log_softmax(1)
    expected = []
    for lp, lab in zip(log_probs, labels):
        terms = [-lp[lab[i, j], i, j] for i in range(32) for j in range(36) if lab[i, j] != 255]
        expected.append(torch.stack(terms).mean())
    torch.testing.assert_close(model.loss(images, labels, reduction="none"), torch.stack(expected),
                               rtol=1e-4, atol=1e-5)


def test_slide_averages_overlapping_windows(tiny_segmentor):
    """Slide == hand-made average over the windows at columns 0, 16, 32 (crop 32, stride 16)."""
    model = tiny_segmentor("dinov2", "linear").eval()
    images = batch(b=1, height=32, width=64)[0]
    got = model.predict(images, mode="slide", crop=32, stride=16)
    expected = torch.zeros_like(got)
    counts = torch.zeros(64)
    for left in (0, 16, 32):
        expected[..., left:left + 32] += model.predict(images[..., left:left + 32])
        counts[left:left + 32] += 1
    torch.testing.assert_close(got, expected / counts, rtol=1e-5, atol=1e-5)
    # one window covering the image exactly: slide == whole
    torch.testing.assert_close(model.predict(images[..., :32], mode="slide", crop=32, stride=8),
                               model.predict(images[..., :32]))


def test_parameter_names_are_stable_and_unique(tiny_segmentor, backbone_name):
    names = [n for n, _ in tiny_segmentor(backbone_name, "linear").named_parameters()]
    again = [n for n, _ in tiny_segmentor(backbone_name, "linear", seed=1).named_parameters()]
    assert names == again
    assert all(n.startswith(("backbone.model.", "head.")) for n in names)
    keys = list(tiny_segmentor(backbone_name, "linear").state_dict())
    assert len(keys) == len(set(keys)) and set(names) <= set(keys)


def test_select_topk_works_on_segmentor_parameter_names(tiny_segmentor):
    """The method core's selection runs on the segmentor's names and respects include patterns."""
    from fishertune import select_topk

    model = tiny_segmentor("dinov2", "linear")
    scores = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(i))
              for i, (n, p) in enumerate(model.named_parameters()) if n.startswith("backbone.model.")}
    total = sum(s.numel() for s in scores.values())
    masks = select_topk(scores, ratio=0.05, include=["backbone.model.encoder.layer.*"])
    assert set(masks) <= set(scores)
    chosen = sum(int(m.sum()) for m in masks.values())
    candidates = sum(s.numel() for n, s in scores.items() if n.startswith("backbone.model.encoder.layer."))
    assert 0 < chosen <= total
    assert chosen == round(0.05 * candidates) or chosen == int(0.05 * candidates)
    assert all(not m.any() for n, m in masks.items() if not n.startswith("backbone.model.encoder.layer."))


def test_unknown_mode_and_bad_stride_are_clear_errors(tiny_segmentor):
    from fishertune.errors import FisherTuneError

    model = tiny_segmentor("dinov2", "linear").eval()
    images = batch(b=1)[0]
    with pytest.raises(FisherTuneError, match="whole"):
        model.predict(images, mode="tiles")
    with pytest.raises(FisherTuneError, match="stride"):
        model.predict(images, mode="slide", crop=16, stride=32)

import pytest
import torch
import torch.nn.functional as F
from tiny_models import brute_force_fisher, classification_loss, make_batches
from torch import nn

from fishertune import empirical_fisher
from fishertune.errors import UsageError
from fishertune.sparse.fisher import RunningFisher


def assert_same(a, b, rtol=1e-4, atol=1e-9):
    assert a.keys() == b.keys()
    for n in a:
        assert a[n].dtype == torch.float32 and a[n].shape == b[n].shape, n
        torch.testing.assert_close(a[n], b[n], rtol=rtol, atol=atol, msg=n)


@pytest.mark.parametrize("backend", ["vmap", "loop"])
def test_per_sample_fisher_equals_one_sample_loop_mlp(mlp, backend):
    batches = make_batches([3, 1, 4], (6,))  # uneven batch sizes
    names = [n for n, p in mlp.named_parameters()]
    fisher = empirical_fisher(mlp, batches, classification_loss, backend=backend)
    assert_same(fisher, brute_force_fisher(mlp, batches, classification_loss, names))


@pytest.mark.parametrize("backend", ["vmap", "loop"])
def test_per_sample_fisher_equals_one_sample_loop_vit(vit, backend):
    batches = make_batches([2, 3], (3, 8, 8))
    names = [n for n, _ in vit.named_parameters()]
    fisher = empirical_fisher(vit, batches, classification_loss, backend=backend)
    assert_same(fisher, brute_force_fisher(vit, batches, classification_loss, names))


def test_unused_params_get_zeros_and_frozen_are_excluded(mlp):
    mlp.fc1.bias.requires_grad_(False)
    batches = make_batches([4], (6,))
    fisher = empirical_fisher(mlp, batches, classification_loss)
    assert "fc1.bias" not in fisher
    assert torch.equal(fisher["unused.weight"], torch.zeros(2, 2))
    assert fisher["fc1.weight"].abs().sum() > 0
    # named explicitly, a frozen parameter is included, and stays frozen afterwards
    for backend in ("vmap", "loop"):
        explicit = empirical_fisher(mlp, batches, classification_loss, params=["fc1.bias"], backend=backend)
        assert list(explicit) == ["fc1.bias"] and explicit["fc1.bias"].abs().sum() > 0
        assert not mlp.fc1.bias.requires_grad
    explicit = empirical_fisher(mlp, batches, classification_loss, params=["fc1.bias"], per_sample=False)
    assert explicit["fc1.bias"].abs().sum() > 0 and not mlp.fc1.bias.requires_grad


def test_batch_mode_is_size_weighted_squared_mean_gradient(mlp):
    batches = make_batches([3, 5], (6,))
    expected = {n: torch.zeros_like(p) for n, p in mlp.named_parameters()}
    for batch in batches:
        mlp.zero_grad()
        classification_loss(mlp, batch).mean().backward()
        for n, p in mlp.named_parameters():
            if p.grad is not None:
                expected[n] += batch["y"].shape[0] * p.grad.square()
    expected = {n: e / 8 for n, e in expected.items()}
    assert_same(empirical_fisher(mlp, batches, classification_loss, per_sample=False), expected)


def test_batch_mode_equals_exact_when_samples_are_identical(mlp):
    batch = make_batches([1], (6,))[0]
    repeated = {"x": batch["x"].repeat(5, 1), "y": batch["y"].repeat(5), "name": ["a"] * 5}
    exact = empirical_fisher(mlp, [repeated], classification_loss)
    cheap = empirical_fisher(mlp, [repeated], classification_loss, per_sample=False)
    assert_same(cheap, exact)


class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


class BranchingNet(nn.Module):
    """Data-dependent control flow: vmap cannot turn a tensor condition into a Python bool."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 3)
        self.b = nn.Linear(6, 3)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else self.b(x)


@pytest.mark.parametrize("net,shape", [(BatchNormNet, (3, 4, 4)), (BranchingNet, (6,))])
def test_auto_falls_back_to_loop_when_vmap_cannot(net, shape):
    torch.manual_seed(0)
    model = net().train()
    batches = make_batches([3, 2], shape)
    names = [n for n, _ in model.named_parameters()]
    with pytest.warns(UserWarning, match="vmap failed"):
        fisher = empirical_fisher(model, batches, classification_loss)
    assert_same(fisher, brute_force_fisher(model, batches, classification_loss, names))
    with pytest.raises(Exception):  # noqa: B017 - forcing vmap surfaces torch's own error
        empirical_fisher(model, batches, classification_loss, backend="vmap")


def test_bad_arguments_are_usage_errors(mlp):
    # arguments the API does not accept: a programming error (UsageError), not bad user input
    batches = make_batches([2], (6,))
    with pytest.raises(UsageError, match="unknown parameter 'nope'"):
        empirical_fisher(mlp, batches, classification_loss, params=["nope"])
    mean_loss = lambda m, b: classification_loss(m, b).mean()  # noqa: E731
    with pytest.raises(UsageError, match="shape \\[1\\], got \\[\\]"):
        empirical_fisher(mlp, batches, mean_loss, backend="loop")
    with pytest.raises(UsageError, match="shape \\[2\\], got \\[\\]"):
        empirical_fisher(mlp, batches, mean_loss, per_sample=False)
    with pytest.raises(UsageError, match="unknown Fisher backend"):
        empirical_fisher(mlp, batches, classification_loss, backend="fast")
    with pytest.raises(UsageError, match="no samples"):
        empirical_fisher(mlp, [], classification_loss)
    with pytest.raises(UsageError, match="no samples"):
        RunningFisher(mlp, classification_loss, ["fc1.weight"]).value()


def test_transformers_dinov2_vmap_and_fallback():
    transformers = pytest.importorskip("transformers", reason="transformers is an optional backbone provider")
    config = transformers.Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=32, patch_size=4, image_size=8,
                                       hidden_dropout_prob=0.1)
    torch.manual_seed(0)
    model = transformers.Dinov2Model(config)
    head = nn.Linear(16, 3)

    def loss_fn(m, batch):
        return F.cross_entropy(head(m(pixel_values=batch["x"]).pooler_output), batch["y"], reduction="none")

    batches = make_batches([3], (3, 8, 8))
    model.eval()
    names = [n for n, _ in model.named_parameters()]
    vmapped = empirical_fisher(model, batches, loss_fn, backend="vmap")  # raises if vmap cannot
    assert_same(vmapped, brute_force_fisher(model, batches, loss_fn, names))
    model.train()  # dropout draws random numbers per sample: vmap refuses, the loop takes over
    with pytest.warns(UserWarning, match="vmap failed"):
        looped = empirical_fisher(model, batches, loss_fn)
    assert looped.keys() == vmapped.keys() and all(torch.isfinite(v).all() for v in looped.values())


@pytest.mark.parametrize("chunk_size", [1, 2, 5])
def test_chunked_vmap_equals_loop_with_and_without_perturbation(vit, chunk_size):
    from fishertune.sparse.perturbation import FeaturePerturbation

    batches = make_batches([3, 2], (3, 8, 8))
    names = [n for n, _ in vit.named_parameters()]
    loop = empirical_fisher(vit, batches, classification_loss, backend="loop")
    chunked = empirical_fisher(vit, batches, classification_loss, backend="vmap", chunk_size=chunk_size)
    assert_same(chunked, loop)
    results = {}
    for backend, chunk in (("loop", None), ("vmap", chunk_size)):
        pert = FeaturePerturbation(vit, ["blocks.0"], alpha=1.0, seed=5)
        with pert:
            with torch.no_grad(), pert.recording():
                for b in batches:
                    classification_loss(vit, b)
            results[backend] = empirical_fisher(vit, batches, classification_loss, backend=backend,
                                                chunk_size=chunk, perturbation=pert)
    assert_same(results["vmap"], results["loop"])
    assert not torch.allclose(results["vmap"]["blocks.1.fc1.weight"], loop["blocks.1.fc1.weight"])
    assert set(loop) == set(names)


def test_chunked_vmap_holds_one_chunk_of_per_sample_gradients(mlp, monkeypatch):
    """The per-sample gradients handed back by each vmap call have chunk_size rows, never the batch."""
    import fishertune.sparse.fisher as fisher_module

    rows = []
    real_vmap = fisher_module.vmap

    def recording_vmap(*args, **kwargs):
        mapped = real_vmap(*args, **kwargs)

        def call(*a):
            out = mapped(*a)
            rows.append({g.shape[0] for g in out.values()})
            return out
        return call

    monkeypatch.setattr(fisher_module, "vmap", recording_vmap)
    empirical_fisher(mlp, make_batches([5], (6,)), classification_loss, backend="vmap", chunk_size=2)
    assert rows == [{2}, {2}, {1}]

"""What a sparse weight gradient could save at element granularity, on the demo setting.

At `granularity: element` nearly every backbone tensor holds a selected entry, so the backward pass
computes every weight gradient G = δᵀx densely although the optimiser reads about 5% of it. This measures,
side by side in one process (medians of interleaved repeats):
1. the share of a full fine-tuning forward + backward that the backbone's weight gradients take: the pass
   with every weight trained against the pass with the backbone's weights frozen and the gradient still
   carried to the input image through every block (the input gradients are computed, no weight gradient;
   the image's own gradient, which full fine-tuning does not compute, is included), the lower bound of any
   sparse weight gradient;
2. for every shape of the backbone's nn.Linear layers, at the tokens of the demo's batch, the dense G
   against `torch.sparse.sampled_addmm`, which computes G only at the entries of a fixed sparsity pattern
   (random, at each --densities), scattered into a zero gradient as the optimiser reads it.
It prints the forward + backward that the sampled weight gradients would give, modelled as the frozen
pass plus the weight gradients' share times the kernel's ratio (summed over the layers).

    python benchmarks/sparse_weight_grad.py [--repeats 7] [--threads 2] [--densities 0.02 0.05 0.1]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter

import torch
from torch import nn

from training_probe import Probe, median_seconds


def linear_shapes(probe: Probe, batch: dict) -> Counter:
    """(tokens, in, out) of every backbone nn.Linear in one forward pass of `batch`, with multiplicity."""
    shapes: Counter = Counter()
    hooks = [m.register_forward_hook(lambda m, x, y: shapes.update([(x[0].numel() // m.in_features,
                                                                    m.in_features, m.out_features)]))
             for m in probe.model.backbone.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        probe.model.loss(batch["image"], batch["label"])
    for hook in hooks:
        hook.remove()
    return shapes


def pass_seconds(probe: Probe, batch: dict, repeats: int) -> dict[str, float]:
    weights = list(probe.model.backbone.parameters())

    def forward_backward(train_weights: bool) -> None:
        for p in weights:
            p.requires_grad_(train_weights)
        image = batch["image"].clone().requires_grad_(not train_weights)
        probe.model.zero_grad(set_to_none=True)
        probe.model.loss(image, batch["label"]).mean().backward()

    probe.model.train()
    return median_seconds({"full": lambda: forward_backward(True),
                           "no weight gradient": lambda: forward_backward(False)}, repeats)


def kernel_seconds(shape: tuple[int, int, int], density: float, repeats: int) -> dict[str, float]:
    tokens, fan_in, fan_out = shape
    g = torch.Generator().manual_seed(0)
    delta, x = torch.randn(tokens, fan_out, generator=g), torch.randn(tokens, fan_in, generator=g)
    mask = torch.rand(fan_out, fan_in, generator=g) < density
    index = mask.reshape(-1).nonzero().squeeze(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        pattern = mask.float().to_sparse_csr()
        pattern = torch.sparse_csr_tensor(pattern.crow_indices(), pattern.col_indices(),
                                          torch.zeros(index.numel()), mask.shape)

    def sampled() -> torch.Tensor:
        grad = torch.zeros(fan_out * fan_in)
        grad[index] = torch.sparse.sampled_addmm(pattern, delta.t(), x, beta=0.0).values()
        return grad

    dense = delta.t().mm(x)
    torch.testing.assert_close(sampled()[index], dense.reshape(-1)[index], rtol=1e-4, atol=1e-3)
    return median_seconds({"dense": lambda: delta.t().mm(x), "sampled": sampled}, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--densities", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("command: python benchmarks/sparse_weight_grad.py " + " ".join(sys.argv[1:]))
    probe = Probe("full")
    batch = probe.batches[0]
    data = probe.config.data
    print(f"demo setting (offline DINOv2-S, crop {data.crop}, batch {data.batch_size}), CPU, "
          f"{args.threads} threads; medians of {args.repeats} interleaved repeats")

    passes = pass_seconds(probe, batch, args.repeats)
    share = 1 - passes["no weight gradient"] / passes["full"]
    print(f"\n1. forward + backward: every weight trained {passes['full']:.3f} s, backbone weights frozen "
          f"(input gradients only) {passes['no weight gradient']:.3f} s: the weight gradients take "
          f"{share:.0%}")

    shapes = linear_shapes(probe, batch)
    print(f"\n2. weight gradient G = δᵀx of the backbone's nn.Linear layers, ms per layer (ratio sampled / "
          f"dense)\n{'tokens x in x out':<22}{'layers':>7}" + "".join(f"{f'density {d:g}':>22}"
                                                                  for d in args.densities))
    totals = {d: [0.0, 0.0] for d in args.densities}
    for shape, count in sorted(shapes.items()):
        cells = []
        for d in args.densities:
            t = kernel_seconds(shape, d, args.repeats)
            totals[d][0] += count * t["dense"]
            totals[d][1] += count * t["sampled"]
            dense, sampled = 1e3 * t["dense"], 1e3 * t["sampled"]
            cells.append(f"{dense:.2f} -> {sampled:.2f} ({sampled / dense:.2f})")
        print(f"{'x'.join(map(str, shape)):<22}{count:>7}" + "".join(f"{c:>22}" for c in cells))
    print("\n3. forward + backward with sampled weight gradients, modelled, as a ratio to full's")
    for d, (dense, sampled) in totals.items():
        print(f"density {d:g}: weight gradients {sampled / dense:.2f}x dense, forward + backward "
              f"{1 - share + share * sampled / dense:.2f}x")


if __name__ == "__main__":
    main()

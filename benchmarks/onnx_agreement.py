"""Does the ONNX graph give what `predict` gives, on camera-sized images whose sides are not multiples of 14?

Trains a short run of the offline DINOv2-S (linear head, a few steps on synthetic source images), exports
it with `fishertune export --onnx`, and for each size prints the largest absolute logit difference between
onnxruntime and `Segmentor.predict(mode="whole")` and their argmax agreement.

    python benchmarks/onnx_agreement.py --out runs/onnx_agreement [--sizes 150x120,1023x511,2048x1024]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml

from fishertune.cli.main import main as cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/onnx_agreement")
    parser.add_argument("--sizes", default="150x120,1023x511,2048x1024", help="WIDTHxHEIGHT,...")
    args = parser.parse_args()
    import onnxruntime

    import fishertune

    out = Path(args.out)
    run, onnx_file = out / "run", out / "model.onnx"
    if not onnx_file.is_file():
        assert cli(["synth", "--out", str(out / "data"), "--n", "16", "--size", "126", "--domains", "source",
                    "--overwrite"]) == 0
        config = {"base": ["protocols/synthetic.yaml", "backbones/dinov2_s_offline.yaml",
                           "methods/fishertune.yaml"],
                  "data": {"train": f"folder:{(out / 'data' / 'source').resolve()}", "val": None,
                           "targets": [], "crop": 112, "batch_size": 8},
                  "train": {"warmup_steps": 2, "steps": 2, "prepare_batches": 1, "checkpoint_every": 0,
                            "eval_every": 0}}
        (out / "run.yaml").write_text(yaml.safe_dump(config))
        assert cli(["train", str(out / "run.yaml"), "--out", str(run), "--no-progress"]) == 0
        assert cli(["export", str(run), "--onnx", str(onnx_file)]) == 0
    model = fishertune.load_pretrained(run).segmentor
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    print("| input (W x H) | max abs logit difference | argmax agreement |\n|---|---:|---:|")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        image = torch.rand(1, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model.predict(image, mode="whole").numpy()
        got = session.run(None, {"images": image.numpy()})[0]
        diff = float(np.abs(got - expected).max())
        agreement = float((got.argmax(1) == expected.argmax(1)).mean())
        print(f"| {width} x {height} | {diff:.2e} | {100 * agreement:.4f}% |", flush=True)


if __name__ == "__main__":
    main()

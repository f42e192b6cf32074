"""Regenerate the figures and tables of docs/results.md from trained runs.

    python docs/make_results.py --run sample=/work/runs/sos64_sample --run v=/work/runs/sos64_v \
        --real sos:../shared/data/sos --samples 64 --steps 200 --out docs/results

For each run: generate `--samples` pairs with `dakter generate` (seeds 0..N-1), draw
an image | oil probability | mask grid, compute the `dakter quality` table against
the real training split, and plot the loss curves of all runs in one figure.
Needs matplotlib (`pip install -e ".[docs]"`).
"""

import argparse
import json
import os

import numpy as np

from dakter_hf.data.sources import load_source
from dakter_hf.data.visualize import generated_samples_figure
from dakter_hf.evaluation.formatting import format_quality_table
from dakter_hf.evaluation.report import quality_report
from dakter_hf.generation.config import GenerationSettings
from dakter_hf.generation.dataset import generate_dataset


def loss_figure(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, run in runs.items():
        history = [json.loads(line) for line in open(os.path.join(run, "loss_history.jsonl"), encoding="utf-8")]
        steps = np.array([h["step"] for h in history])
        for axis, key in zip(axes, ("loss", "image_loss", "label_loss")):
            values = np.array([h[key] for h in history])
            window = max(1, len(values) // 40)
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            axis.plot(steps, values, alpha=0.25)
            axis.plot(steps[window - 1 :], smooth, label=name, color=axis.lines[-1].get_color())
            axis.set_title(key)
            axis.set_xlabel("step")
            axis.set_yscale("log")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--run", action="append", required=True, help="NAME=RUN_DIR (holds pipeline/ and loss_history.jsonl)"
    )
    parser.add_argument("--real", required=True)
    parser.add_argument("--sensor", default="palsar")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--label-noise", default="consistent")
    parser.add_argument(
        "--generated-root", default="/work/runs/generated", help="where the generated datasets go (not committed)"
    )
    parser.add_argument("--out", default="docs/results")
    args = parser.parse_args()

    runs = dict(item.split("=", 1) for item in args.run)
    os.makedirs(args.out, exist_ok=True)
    real = load_source(args.real, sensor=args.sensor, split="train")["train"]
    loss_figure(runs, os.path.join(args.out, "loss_curves.png"))
    for name, run in runs.items():
        tag = f"{name}_{args.label_noise}"
        generated_dir = os.path.join(args.generated_root, tag)
        settings = GenerationSettings(
            num_samples=args.samples,
            num_inference_steps=args.steps,
            label_noise=args.label_noise,
            batch_size=16,
            shard_size=64,
        )
        generate_dataset(os.path.join(run, "pipeline"), generated_dir, settings, device="cpu")
        generated = load_source(generated_dir, split="train")["train"]
        generated_samples_figure(generated, columns=8).save(os.path.join(args.out, f"samples_{tag}.png"))
        report = quality_report(real, generated)
        for part in ("real", "generated"):
            report[part].pop("histogram", None)
            report[part].pop("spectrum", None)
        with open(os.path.join(args.out, f"quality_{tag}.json"), "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
        with open(os.path.join(args.out, f"quality_{tag}.md"), "w", encoding="utf-8") as handle:
            handle.write(format_quality_table(report) + "\n")
        print(f"== {tag}\n" + format_quality_table(report))


if __name__ == "__main__":
    main()

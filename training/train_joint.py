#!/usr/bin/env python
"""Train the DAKTer joint diffusion model.

    accelerate launch training/train_joint.py --config configs/tiny.yaml
    accelerate launch training/train_joint.py --data sos:/path/to/SOS --sensor palsar \
        --resolution 128 --learning_rate 2e-5 --output_dir runs/stage1          # stage 1
    accelerate launch training/train_joint.py --data sos:/path/to/SOS --resolution 256 \
        --learning_rate 1e-5 --init_from runs/stage1/pipeline --output_dir runs/stage2  # stage 2

Run with `--help` for every argument; all of them can also come from `--config FILE`.
"""

from dakter_hf.data.sources import source_path
from dakter_hf.joint.arguments import parse_args
from dakter_hf.joint.training import train
from dakter_hf.utils.arguments import run_launcher
from dakter_hf.utils.ownership import check_output_path


def main(argv=None):
    args = parse_args(argv)
    # the one output rule (ownership.py), before any data loads
    inputs = [source_path(args.data), args.init_from]
    check_output_path(args.output_dir, inputs, kind="train-joint", flag="--output_dir", overwrite=args.overwrite)
    return train(args)


if __name__ == "__main__":
    run_launcher(main, "train_joint.py")

#!/usr/bin/env python
"""Train a DAKTer segmentation student on real + generated SAR data.

    # real only
    accelerate launch training/train_student.py --real sos:/data/SOS --sensor palsar --mode real \
        --student segformer-b3 --resolution 256 --output_dir runs/student-real
    # DAKTer: real + generated soft labels with the KD loss, generated = 1.0 x real
    accelerate launch training/train_student.py --real sos:/data/SOS --generated gen/sos-palsar \
        --scale 1.0 --mode dakter --output_dir runs/student-dakter

Arguments are transformers' TrainingArguments (paper defaults: lr 1e-4, batch 32,
400 epochs) plus the student's; `--help` lists them all, and any of them can come from a
YAML/JSON `--config FILE` (the command line wins).
"""

from dakter_hf.students.train import main
from dakter_hf.utils.arguments import run_launcher


if __name__ == "__main__":
    run_launcher(main, "train_student.py")

"""DAKTerTrainer (dakter mode: CE + Dice + KD, half the batch generated) vs a plain transformers Trainer
whose model computes its own CE: same model, same batch, same optimizer, in one run.

    python benchmarks/bench_student.py [--student segformer-b0 --resolution 128 --batch 8 --steps 3 --rounds 7]

One round = `--steps` optimizer steps (forward, backward, AdamW step) through each trainer's
own `training_step`; rounds alternate between the two and the medians are compared, so
background load hits both alike. Goal: ratio (DAKTer / plain) <= 1.10.
"""

import argparse
import tempfile

import torch
from harness import alternate, median
from transformers import Trainer, TrainingArguments

from dakter_hf.students.losses import StudentLossConfig
from dakter_hf.students.models import build_student
from dakter_hf.students.trainer import DAKTerTrainer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="segformer-b0")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    id2label = {0: "background", 1: "oil"}
    model = build_student(args.student, id2label, seed=0).to(args.device)
    g = torch.Generator().manual_seed(0)
    r, b = args.resolution, args.batch
    images = torch.rand(b, 1, r, r, generator=g) * 2 - 1
    soft = torch.randn(b, 2, r, r, generator=g) * 3
    labels = soft.argmax(1)
    generated = torch.arange(b) % 2 == 1
    dakter_batch = {
        "pixel_values": images,
        "labels": labels,
        "soft_labels": soft,
        "has_soft_label": generated,
        "is_generated": generated,
    }
    plain_batch = {"pixel_values": images, "labels": labels}

    with tempfile.TemporaryDirectory() as out:
        common = {
            "output_dir": out,
            "report_to": "none",
            "use_cpu": args.device == "cpu",
            "learning_rate": 1e-4,
            "per_device_train_batch_size": b,
            "disable_tqdm": True,
        }
        dakter = DAKTerTrainer(
            model=model, args=TrainingArguments(remove_unused_columns=False, **common), loss_config=StudentLossConfig()
        )
        plain = Trainer(model=model, args=TrainingArguments(**common))
        for trainer in (dakter, plain):
            trainer.create_optimizer()
            trainer.current_gradient_accumulation_steps = 1  # set by train(); training_step reads it
        model.train()

        def steps(trainer, batch):
            def run():
                for _ in range(args.steps):
                    trainer.training_step(model, batch, num_items_in_batch=None)
                    trainer.optimizer.step()
                    trainer.optimizer.zero_grad(set_to_none=True)

            return run

        times = alternate(
            {"dakter": steps(dakter, dakter_batch), "plain": steps(plain, plain_batch)}, args.rounds, args.device
        )
    dakter_s, plain_s = median(times["dakter"]) / args.steps, median(times["plain"]) / args.steps
    print(
        f"device={args.device} student={args.student} {r}px batch={b} steps/round={args.steps} rounds={args.rounds} "
        f"threads={torch.get_num_threads()}"
    )
    print(
        f"plain Trainer (model's own CE)      median {plain_s:.4f} s/step  (rounds: "
        f"{', '.join(f'{t / args.steps:.4f}' for t in times['plain'])})"
    )
    print(
        f"DAKTerTrainer (CE + Dice + KD mix)  median {dakter_s:.4f} s/step  (rounds: "
        f"{', '.join(f'{t / args.steps:.4f}' for t in times['dakter'])})"
    )
    ratio = dakter_s / plain_s
    print(f"ratio DAKTer/plain = {ratio:.3f}  (goal <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})")


if __name__ == "__main__":
    main()

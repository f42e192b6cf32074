"""One training step of the joint model under torch.profiler: the top operators by time.

    python benchmarks/profile_step.py [--device cuda --preset paper --resolution 256 --batch 16]

The step is what `train_joint.py` runs on a GPU by default (DAKTer objective, v + zero-SNR,
bf16 autocast, TF32, fused AdamW) plus channels_last; `--options` picks others (as in
bench_train.py: bf16, tf32, fused_adamw, channels_last, compile; `none` for eager fp32). A few
warm-up steps run first, then `--steps` steps are profiled; the table is sorted by self device
time on CUDA (self CPU time on a CPU) and shows the top `--top` rows.
"""

import argparse

import torch
from harness import autocast_context, dakter_step, step_optimizer
from torch.profiler import ProfilerActivity, profile

from dakter_hf.joint.objective import DAKTerObjective
from dakter_hf.joint.speed import apply_model_options, enable_tf32
from dakter_hf.joint.unet import make_joint_unet


OPTIONS = ("bf16", "tf32", "fused_adamw", "channels_last", "compile")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3, help="steps before the profiled ones")
    parser.add_argument("--steps", type=int, default=1, help="profiled steps")
    parser.add_argument("--top", type=int, default=10, help="rows of the table")
    parser.add_argument(
        "--options",
        default="bf16,tf32,fused_adamw,channels_last",
        help=f"comma-separated from {','.join(OPTIONS)}, or none",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    options = set() if args.options == "none" else {o.strip() for o in args.options.split(",") if o.strip()}
    if options - set(OPTIONS):
        raise SystemExit(
            f"unknown option(s) {sorted(options - set(OPTIONS))}; choose from {', '.join(OPTIONS)} or none"
        )
    cuda = args.device.startswith("cuda")
    if not cuda:  # as in bench_train.py: these apply on CUDA only
        options -= {"bf16", "tf32", "fused_adamw"}
    if "tf32" in options:
        enable_tf32()

    torch.manual_seed(0)
    unet = make_joint_unet(2, args.preset, sample_size=args.resolution).to(args.device).train()
    apply_model_options(unet, channels_last="channels_last" in options, compile="compile" in options)
    optimizer = step_optimizer(unet.parameters(), args.device, fused="fused_adamw" in options)
    objective = DAKTerObjective(2, balancing_factor=0.44, image_prediction_type="v", zero_terminal_snr=True)
    images = torch.rand(args.batch, 1, args.resolution, args.resolution, device=args.device) * 2 - 1
    masks = (torch.rand(args.batch, args.resolution, args.resolution, device=args.device) > 0.8).long()
    autocast = autocast_context(args.device, torch.bfloat16 if "bf16" in options else None)  # bf16: CUDA only
    step = dakter_step(objective, unet, images, masks, optimizer, autocast)

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    name = f" ({torch.cuda.get_device_name(torch.device(args.device))})" if cuda else ""
    chosen = ",".join(sorted(options)) or "none"
    print(
        f"profile: device={args.device}{name} preset={args.preset} {args.resolution}px batch={args.batch} "
        f"options={chosen} warm-up={args.warmup} profiled steps={args.steps} threads={torch.get_num_threads()}"
    )
    print(f"top {args.top} operators by {sort}:")
    print(prof.key_averages().table(sort_by=sort, row_limit=args.top))


if __name__ == "__main__":
    main()

"""DAKTerPipeline vs diffusers' DDIMPipeline: same UNet, steps and batch, in one run.

    python benchmarks/bench_sampling.py [--preset small --resolution 64 --batch 4 --steps 50 --repeats 5]

Runs alternate between the two pipelines and the median of each is compared, so
background load affects both alike. Goal: ratio (DAKTer / DDIM) <= 1.03.

It also counts the tensor operations (ATen calls, each at least one kernel launch on a GPU)
and the new tensors each sampling step makes outside the UNet, for both pipelines.

    python benchmarks/bench_sampling.py --device cuda --resolution 128 --batch 128 --steps 50
"""

import argparse

import torch
from diffusers import DDIMPipeline, DDIMScheduler
from harness import alternate, median

from dakter_hf.joint.objective import DAKTerObjective
from dakter_hf.joint.unet import make_joint_unet
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline


def ops_outside_unet(pipe, unet, args):
    """(ATen ops, tensors allocated) per sampling step, not counting the UNet's own."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops, self.new = 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket not in VIEWS:
                self.ops += 1
                outputs = out if isinstance(out, (tuple, list)) else (out,)
                inputs = {id(t) for t in list(args) + list((kwargs or {}).values()) if isinstance(t, torch.Tensor)}
                self.new += sum(1 for t in outputs if isinstance(t, torch.Tensor) and id(t) not in inputs)
            return out

    aten = torch.ops.aten
    VIEWS = {
        aten.slice,
        aten.select,
        aten.view,
        aten.alias,
        aten.expand,
        aten.unsqueeze,
        aten.squeeze,
        aten.permute,
        aten.detach,
    }
    steps = 5
    sample = torch.randn(args.batch, unet.config.in_channels, args.resolution, args.resolution, device=args.device)
    with torch.no_grad():
        counted = Count()
        with counted:
            unet(sample, torch.tensor(10, device=args.device))
        unet_ops, unet_new = counted.ops, counted.new
        counted = Count()
        with counted:
            pipe(
                batch_size=args.batch,
                num_inference_steps=steps,
                generator=torch.Generator().manual_seed(0),
                output_type="pt",
            )
        counted_once = Count()
        with counted_once:
            pipe(
                batch_size=args.batch,
                num_inference_steps=1,
                generator=torch.Generator().manual_seed(0),
                output_type="pt",
            )
    # per-step cost: the difference between a 5-step and a 1-step call, over 4 steps, minus the UNet
    ops = (counted.ops - counted_once.ops) / (steps - 1) - unet_ops
    new = (counted.new - counted_once.new) / (steps - 1) - unet_new
    return ops, new


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    unet = make_joint_unet(args.classes, args.preset, sample_size=args.resolution).to(args.device).eval()
    objective = DAKTerObjective(args.classes, balancing_factor=0.44)
    dakter = DAKTerPipeline(
        unet=unet,
        scheduler=objective.sampling_scheduler(),
        balancing_factor=0.44,
        class_names=[f"c{i}" for i in range(args.classes)],
    )
    ddim = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(objective.scheduler.config))
    for pipe in (dakter, ddim):
        pipe.set_progress_bar_config(disable=True)

    def run(pipe):
        return lambda: pipe(
            batch_size=args.batch,
            num_inference_steps=args.steps,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )

    per_step = {name: ops_outside_unet(pipe, unet, args) for name, pipe in (("dakter", dakter), ("ddim", ddim))}
    times = alternate({"dakter": run(dakter), "ddim": run(ddim)}, args.repeats, args.device)
    dakter_s, ddim_s = median(times["dakter"]), median(times["ddim"])
    print(
        f"device={args.device} preset={args.preset} {args.resolution}px batch={args.batch} steps={args.steps} "
        f"repeats={args.repeats} threads={torch.get_num_threads()}"
    )
    print(f"DDIMPipeline   median {ddim_s:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times['ddim'])})")
    print(f"DAKTerPipeline median {dakter_s:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times['dakter'])})")
    for name, label in (("ddim", "DDIMPipeline  "), ("dakter", "DAKTerPipeline")):
        ops, new = per_step[name]
        print(f"{label} per step outside the UNet: {ops:.1f} tensor ops, {new:.1f} new tensors")
    ratio = dakter_s / ddim_s
    print(f"ratio DAKTer/DDIM = {ratio:.3f}  (goal <= 1.03: {'met' if ratio <= 1.03 else 'NOT met'})")


if __name__ == "__main__":
    main()

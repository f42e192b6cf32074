"""Training throughput: plain diffusers loop, DAKTer objective, each fast-training option, the
real training loop against a bare step loop; and generation peak memory for N and 4N samples.

    python benchmarks/bench_train.py [--preset small --resolution 64 --batch 16 --steps 10 --repeats 3]
    python benchmarks/bench_train.py --device cuda --preset paper --resolution 256 --batch 16
    python benchmarks/bench_train.py --loop-only --loop-steps 40     # training loop vs bare step loop
    python benchmarks/bench_train.py --memory-only --n 16

Throughput (one process, same UNet weights and batch, one AdamW step per iteration, rounds
alternate, medians compared): the plain diffusers loop (epsilon MSE on the joint tensor), the
DAKTer objective, and the DAKTer objective with each option of `train_joint.py`: fused AdamW,
TF32 and bf16 autocast (CUDA only: skipped on a CPU, with the reason), channels_last and
torch.compile. Each line gives images/s and model FLOP utilisation: FLOPs of one training
step counted by `torch.utils.flop_counter.FlopCounterMode`, over the device's peak
(`--peak-tflops`, or a table of known GPUs). Goal: DAKTer/plain >= 0.95 eagerly; at 256 px the
paper preset with the options >= 1.5x the plain eager loop.

Training loop vs bare loop: `train_joint.train` itself (data pipeline, Accelerate, clipping,
lr schedule, logging) on `--loop-data`, its steady-state rate from its own log, against a bare
objective + AdamW loop on a fixed batch of the same size, measured before and after it in the
same process. Once with the decode-once data path (the default), once with `--data_cache none`
(decode + resize every step). Goal: >= 0.9x.

Memory: `generate_dataset` runs in a fresh subprocess for N and 4N samples (tiny UNet, few
steps) and reports the peak RSS. Goal: about the same.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from harness import alternate, autocast_context, dakter_step, median, seconds, step_optimizer

from dakter_hf.joint.objective import DAKTerObjective
from dakter_hf.joint.speed import adamw, apply_model_options, enable_tf32
from dakter_hf.joint.unet import make_joint_unet


# dense peak TFLOP/s: (bf16/fp16 tensor cores, TF32 tensor cores); name substring -> peaks
PEAK_TFLOPS = {
    "H200": (989.0, 494.0),
    "H100": (989.0, 494.0),
    "A100": (312.0, 156.0),
    "L40S": (362.0, 183.0),
    "A10G": (70.0, 35.0),
    "4090": (165.0, 83.0),
}


def peak_tflops(device: str, low_precision: bool, override):
    if override:
        return override
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    for key, (half, tf32) in PEAK_TFLOPS.items():
        if key in name:
            return half if low_precision else tf32
    return None


def step_flops(step) -> int:
    """FLOPs of one training step (forward + backward), as FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def throughput(args) -> None:
    device = args.device
    cuda = device.startswith("cuda")
    torch.manual_seed(0)
    initial = make_joint_unet(2, args.preset, sample_size=args.resolution).state_dict()
    images = torch.rand(args.batch, 1, args.resolution, args.resolution, device=device) * 2 - 1
    masks = (torch.rand(args.batch, args.resolution, args.resolution, device=device) > 0.8).long()
    objective = DAKTerObjective(2, balancing_factor=0.44, image_prediction_type="v", zero_terminal_snr=True)
    plain_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    plain_input = torch.cat([images, objective.clean_sample(images, masks)[:, 1:]], dim=1)

    def model(channels_last=False, compile=False):
        unet = make_joint_unet(2, args.preset, sample_size=args.resolution)
        unet.load_state_dict(initial)
        unet.to(device).train()
        apply_model_options(unet, channels_last=channels_last, compile=compile, compile_mode=args.compile_mode)
        return unet

    def make_step(kind="dakter", fused=False, autocast=None, channels_last=False, compile=False):
        unet = model(channels_last, compile)
        optimizer = step_optimizer(unet.parameters(), device, fused)
        context = autocast_context(device, autocast)

        def plain_step():  # the minimal diffusers loop (train_unconditional.py style)
            noise = torch.randn_like(plain_input)
            timesteps = torch.randint(0, 1000, (args.batch,), device=device)
            noisy = plain_scheduler.add_noise(plain_input, noise, timesteps)
            with context():
                loss = F.mse_loss(unet(noisy, timesteps).sample.float(), noise)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return dakter_step(objective, unet, images, masks, optimizer, context) if kind == "dakter" else plain_step

    def steps(step):
        def work():
            for _ in range(args.steps):
                step()

        return work

    candidates = {"plain diffusers loop (eager, fp32)": {"kind": "plain"}, "DAKTer objective (eager, fp32)": {}}
    skipped = {}
    explicit = bool(args.options)
    options = (
        [o.strip() for o in args.options.split(",") if o.strip()]
        if explicit
        else ["fused_adamw", "tf32", "bf16", "channels_last", "compile", "all"]
    )
    for option in options:
        if option in ("fused_adamw", "tf32", "bf16", "all") and not cuda:
            skipped[option] = {
                "fused_adamw": "needs CUDA (training fuses AdamW only there)",
                "tf32": "needs CUDA (TF32 tensor cores)",
                "bf16": "needs CUDA (bf16 is the training default only there; CPU autocast is not what training runs)",
                "all": "needs CUDA",
            }[option]
            continue
        if option == "compile" and not cuda and not explicit:
            skipped[option] = (
                "not run on a CPU by default (inductor takes minutes to compile here); pass --options compile"
            )
            continue
        if option == "fused_adamw":
            candidates["DAKTer + fused AdamW"] = {"fused": True}
        elif option == "tf32":
            candidates["DAKTer + TF32"] = {"tf32": True}
        elif option == "bf16":
            candidates["DAKTer + bf16 autocast"] = {"autocast": torch.bfloat16}
        elif option == "channels_last":
            candidates["DAKTer + channels_last"] = {"channels_last": True}
        elif option == "compile":
            candidates[f"DAKTer + torch.compile ({args.compile_mode})"] = {"compile": True}
        elif option == "all":
            candidates["DAKTer + all (bf16, TF32, fused, channels_last, compile)"] = {
                "fused": True,
                "tf32": True,
                "autocast": torch.bfloat16,
                "channels_last": True,
                "compile": True,
            }
        else:
            raise SystemExit(f"unknown option {option!r}")

    # model FLOPs of one step, counted once on the eager fp32 steps (the options do not change the model)
    model_flops = {"plain": step_flops(make_step(kind="plain")), "dakter": step_flops(make_step())}
    # TF32 is a process-wide switch: candidates without it run first, then it is turned on
    works, flops, low_precision = {}, {}, {}
    for name, spec in candidates.items():
        spec = dict(spec)
        spec.pop("tf32", None)
        works[name] = make_step(**spec)
        flops[name] = model_flops[spec.get("kind", "dakter")]
        low_precision[name] = spec.get("autocast") is not None
    fp32_names = [n for n, s in candidates.items() if not s.get("tf32")]
    tf32_names = [n for n, s in candidates.items() if s.get("tf32")]
    times = {}
    for group, turn_on_tf32 in ((fp32_names, False), (tf32_names, True)):
        if not group:
            continue
        if turn_on_tf32:
            enable_tf32()
        times.update(alternate({name: steps(works[name]) for name in group}, args.repeats, device))

    print(
        f"device={device}{' (' + torch.cuda.get_device_name(torch.device(device)) + ')' if cuda else ''} "
        f"preset={args.preset} {args.resolution}px batch={args.batch} steps/round={args.steps} rounds={args.repeats} "
        f"threads={torch.get_num_threads()}"
    )
    rates = {}
    for name in candidates:
        rate = args.steps * args.batch / median(times[name])
        rates[name] = rate
        achieved = flops[name] / args.batch * rate  # FLOP/s
        peak = peak_tflops(device, low_precision[name] or "all" in name, args.peak_tflops)
        mfu = (
            f"MFU {100 * achieved / (peak * 1e12):5.1f} % of {peak:g} TFLOP/s"
            if peak
            else "MFU n/a (no peak for this device; --peak-tflops)"
        )
        print(
            f"  {name:<58} {rate:9.2f} images/s  {flops[name] / args.batch / 1e9:8.2f} GFLOP/image  "
            f"{achieved / 1e12:7.3f} TFLOP/s  {mfu}"
        )
    for option, reason in skipped.items():
        print(f"  skipped {option}: {reason}")
    plain, dakter = rates["plain diffusers loop (eager, fp32)"], rates["DAKTer objective (eager, fp32)"]
    ratio = dakter / plain
    print(
        f"ratio DAKTer/plain (both eager fp32) = {ratio:.3f}  (goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})"
    )
    best = max(rates, key=rates.get)
    print(f"fastest: {best}: {rates[best] / plain:.2f}x the plain eager loop (goal at 256 px, paper preset: >= 1.5x)")


def data_path(args) -> None:
    """Milliseconds per micro-batch of each data path alone (no UNet): decode + resize every step
    (`--data_cache none`) vs decode once + assemble/augment on the device. Both yield the same tensors."""
    from types import SimpleNamespace

    from dakter_hf.data.sources import load_source
    from dakter_hf.joint.arguments import JointTrainingArguments
    from dakter_hf.joint.batching import BatchPlan, micro_batches

    device = torch.device(args.device)
    split = load_source(
        args.loop_data, sensor=args.sensor, split="train", num_classes=2, size=args.resolution, seed=0
    )["train"]
    accelerator = SimpleNamespace(
        device=device, process_index=0, is_local_main_process=False, main_process_first=contextlib.nullcontext
    )
    objective = DAKTerObjective(2)
    print(
        f"data path alone: {args.loop_data}, {args.resolution}px, batch {args.batch}, {len(split)} rows, "
        f"device={device}, threads={torch.get_num_threads()}"
    )
    for cache in ("none", "memory"):
        with tempfile.TemporaryDirectory() as out:
            options = JointTrainingArguments(
                data=args.loop_data,
                resolution=args.resolution,
                train_batch_size=args.batch,
                data_cache=cache,
                output_dir=out,
                report_to="none",
            )
            plan = BatchPlan(len(split), args.batch, 1, 0, 0)
            started = time.perf_counter()
            batches = micro_batches(options, split, plan, accelerator, objective)
            next(batches)
            setup = time.perf_counter() - started
            count = args.data_steps
            elapsed = seconds(lambda: [next(batches) for _ in range(count)], args.device)
            batches.close()
        print(
            f"  {'--data_cache none (decode every step)' if cache == 'none' else 'decode once (memory)':<40} "
            f"{1000 * elapsed / count:8.1f} ms per micro-batch  (set-up {setup:.1f} s)"
        )


def loop_vs_bare(args) -> None:
    """`train_joint.train` against a bare objective + AdamW loop on the same model and batch size."""
    from dakter_hf.data.sources import load_source
    from dakter_hf.joint.arguments import JointTrainingArguments
    from dakter_hf.joint.training import train

    device = args.device
    enable_tf32()  # train() turns TF32 on for the whole process: the first bare run must have it too
    objective = DAKTerObjective(2, balancing_factor=0.44, image_prediction_type="v", zero_terminal_snr=True)
    torch.manual_seed(0)
    split = load_source(
        args.loop_data, sensor=args.sensor, split="train", num_classes=2, size=args.resolution, seed=0
    )["train"]
    first = split.select_columns(["image", "mask"])[: args.batch]
    from dakter_hf.data.transforms import pair_to_tensors

    pairs = [pair_to_tensors(i, m, args.resolution) for i, m in zip(first["image"], first["mask"])]
    images = torch.stack([p["images"] for p in pairs]).to(device)
    masks = torch.stack([p["masks"] for p in pairs]).to(device)

    def bare_rate():
        torch.manual_seed(0)
        unet = make_joint_unet(2, args.preset, sample_size=args.resolution).to(device).train()
        optimizer = adamw(unet.parameters(), device, lr=1e-5)
        timesteps_all = torch.randint(0, 1000, (args.loop_steps, args.batch), device=device)

        def step(k):
            out = objective(unet, images, masks, timesteps=timesteps_all[k])
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for k in range(3):
            step(k)
        measured = args.loop_steps - args.loop_steps // 4
        elapsed = seconds(lambda: [step(k) for k in range(measured)], device)
        return measured * args.batch / elapsed

    def loop_rate(cache):
        with tempfile.TemporaryDirectory() as out:
            options = {
                "data": args.loop_data,
                "sensor": args.sensor,
                "num_classes": 2,
                "resolution": args.resolution,
                "unet_preset": args.preset,
                "train_batch_size": args.batch,
                "max_train_steps": args.loop_steps,
                "logging_steps": max(1, args.loop_steps // 8),
                "checkpointing_steps": 10**9,
                "report_to": "none",
                "balancing_factor": "0.44",
                "data_cache": cache,
                "output_dir": out,
                "learning_rate": 1e-5,
                "mixed_precision": "no",
            }
            train(JointTrainingArguments(**options))
            with open(os.path.join(out, "loss_history.jsonl"), encoding="utf-8") as handle:
                log = [json.loads(line) for line in handle if line.strip()]
        # images_per_second is cumulative from the loop's start: time at record r = images / rate
        (s1, r1), (s2, r2) = (
            (log[1]["step"], log[1]["images_per_second"]),
            (log[-1]["step"], log[-1]["images_per_second"]),
        )
        t1, t2 = s1 * args.batch / r1, s2 * args.batch / r2
        return (s2 - s1) * args.batch / (t2 - t1)

    print(
        f"device={device} preset={args.preset} {args.resolution}px batch={args.batch} loop steps={args.loop_steps} "
        f"data={args.loop_data} threads={torch.get_num_threads()}"
    )
    # bare, loop, bare, loop, bare: each loop run is compared with the bare runs just before and after it
    bare = [bare_rate()]
    results = {}
    for cache in ("auto", "none"):
        results[cache] = loop_rate(cache)
        bare.append(bare_rate())
    print(f"  bare step loop (fixed batch, objective + AdamW)     runs {', '.join(f'{b:.2f}' for b in bare)} images/s")
    for i, (cache, label) in enumerate(
        (("auto", "training loop, decode once (default)"), ("none", "training loop, --data_cache none"))
    ):
        reference = (bare[i] + bare[i + 1]) / 2
        ratio = results[cache] / reference
        print(
            f"  {label:<50} {results[cache]:8.2f} images/s  vs bare {reference:.2f}: ratio {ratio:.3f}  (goal >= 0.9: "
            f"{'met' if ratio >= 0.9 else 'NOT met'})"
        )


CHILD = """
import json, resource, sys, torch
from dakter_hf.generation.config import GenerationSettings
from dakter_hf.generation.dataset import generate_dataset
from dakter_hf.joint.objective import DAKTerObjective
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
from dakter_hf.joint.unet import make_joint_unet
out, n, pipe_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
settings = GenerationSettings(num_samples=n, num_inference_steps=2, batch_size=4, shard_size=8, save_to_disk=False)
generate_dataset(pipe_dir, out, settings, device="cpu", show_progress=False)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def memory(args) -> None:
    from dakter_hf.joint.objective import DAKTerObjective
    from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        pipe = DAKTerPipeline(
            unet=make_joint_unet(2, "tiny", sample_size=32),
            scheduler=DAKTerObjective(2, 0.44).sampling_scheduler(),
            balancing_factor=0.44,
            class_names=["background", "oil"],
        )
        pipe_dir = os.path.join(tmp, "pipe")
        pipe.save_pretrained(pipe_dir)
        results = {}
        for n in (args.n, 4 * args.n):
            env = dict(os.environ, HF_HUB_OFFLINE="1")
            done = subprocess.run(
                [sys.executable, "-c", CHILD, os.path.join(tmp, f"out{n}"), str(n), pipe_dir],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            results[n] = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        print(
            f"generation peak RSS: N={args.n}: {results[args.n]:.1f} MB, 4N={4 * args.n}: {results[4 * args.n]:.1f} "
            f"MB, ratio {results[4 * args.n] / results[args.n]:.3f} (goal: about 1)"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=32, help="N for the memory check")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--loop-only", action="store_true", help="only the training loop vs bare loop comparison")
    parser.add_argument("--data-only", action="store_true", help="only the per-micro-batch cost of the two data paths")
    parser.add_argument("--data-steps", type=int, default=20, help="micro-batches timed per data path")
    parser.add_argument("--no-loop", action="store_true", help="skip the training loop vs bare loop comparison")
    parser.add_argument("--no-memory", action="store_true", help="skip the generation memory check")
    parser.add_argument("--loop-steps", type=int, default=40, help="optimizer steps of each training-loop run")
    parser.add_argument(
        "--loop-data", default="simulate:256", help="data of the training-loop run (sos:ROOT, simulate:N, ...)"
    )
    parser.add_argument("--sensor", default="palsar")
    parser.add_argument(
        "--options",
        default=None,
        help="comma-separated: fused_adamw,tf32,bf16,channels_last,compile,all (default: all that apply)",
    )
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak for MFU (default: a table of known GPUs)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.memory_only:
        memory(args)
        return
    if args.data_only:
        data_path(args)
        return
    if not args.loop_only:
        throughput(args)
    if not args.no_loop:
        data_path(args)
        loop_vs_bare(args)
    if not args.loop_only and not args.no_memory:
        memory(args)


if __name__ == "__main__":
    main()

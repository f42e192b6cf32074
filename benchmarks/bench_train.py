"""Training throughput of the DAKTer objective vs a minimal plain-diffusers loop, and
generation peak memory for N and 4N samples.

    python benchmarks/bench_train.py [--preset small --resolution 64 --batch 16 --steps 20 --repeats 3]
    python benchmarks/bench_train.py --memory-only --n 16

Throughput: both loops train the same UNet on the same batch (one AdamW step per
iteration); rounds alternate, medians compared. Goal: ratio >= 0.95.
Memory: `generate_dataset` runs in a fresh subprocess for N and 4N samples (tiny
UNet, few steps) and reports the peak RSS. Goal: about the same.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from harness import alternate, median

from dakter_hf.objective import DAKTerObjective
from dakter_hf.unet import make_joint_unet


def throughput(args) -> None:
    torch.manual_seed(0)
    device = args.device
    unet = make_joint_unet(2, args.preset, sample_size=args.resolution).to(device).train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    images = (torch.rand(args.batch, 1, args.resolution, args.resolution, device=device) * 2 - 1)
    masks = (torch.rand(args.batch, args.resolution, args.resolution, device=device) > 0.8).long()
    objective = DAKTerObjective(2, balancing_factor=0.44)
    plain_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    plain_input = torch.cat([images, objective.clean_sample(images, masks)[:, 1:]], dim=1)

    def dakter_step():
        out = objective(unet, images, masks)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def plain_step():  # the minimal diffusers loop (train_unconditional.py style)
        noise = torch.randn_like(plain_input)
        timesteps = torch.randint(0, 1000, (args.batch,), device=device)
        noisy = plain_scheduler.add_noise(plain_input, noise, timesteps)
        loss = F.mse_loss(unet(noisy, timesteps).sample, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def steps(step):
        def work():
            for _ in range(args.steps):
                step()

        return work

    times = alternate({"dakter": steps(dakter_step), "plain": steps(plain_step)}, args.repeats, device)
    rates = {name: [args.steps * args.batch / t for t in values] for name, values in times.items()}
    dakter, plain = median(rates["dakter"]), median(rates["plain"])
    print(f"device={device} preset={args.preset} {args.resolution}px batch={args.batch} steps/round={args.steps} rounds={args.repeats} threads={torch.get_num_threads()}")
    print(f"plain diffusers loop  {plain:.2f} images/s  (rounds: {', '.join(f'{r:.2f}' for r in rates['plain'])})")
    print(f"DAKTer objective      {dakter:.2f} images/s  (rounds: {', '.join(f'{r:.2f}' for r in rates['dakter'])})")
    ratio = dakter / plain
    print(f"ratio DAKTer/plain = {ratio:.3f}  (goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})")


CHILD = """
import json, resource, sys, torch
from dakter_hf.generate import generate_dataset
from dakter_hf.objective import DAKTerObjective
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
from dakter_hf.unet import make_joint_unet
out, n, pipe_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
generate_dataset(pipe_dir, out, num_samples=n, num_inference_steps=2, batch_size=4, shard_size=8, device="cpu", save_to_disk=False, show_progress=False)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def memory(args) -> None:
    from dakter_hf.objective import DAKTerObjective
    from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        pipe = DAKTerPipeline(unet=make_joint_unet(2, "tiny", sample_size=32), scheduler=DAKTerObjective(2, 0.44).sampling_scheduler(), balancing_factor=0.44, class_names=["background", "oil"])
        pipe_dir = os.path.join(tmp, "pipe")
        pipe.save_pretrained(pipe_dir)
        results = {}
        for n in (args.n, 4 * args.n):
            env = dict(os.environ, HF_HUB_OFFLINE="1")
            done = subprocess.run([sys.executable, "-c", CHILD, os.path.join(tmp, f"out{n}"), str(n), pipe_dir], capture_output=True, text=True, env=env, check=True)
            results[n] = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        print(f"generation peak RSS: N={args.n}: {results[args.n]:.1f} MB, 4N={4 * args.n}: {results[4 * args.n]:.1f} MB, ratio {results[4 * args.n] / results[args.n]:.3f} (goal: about 1)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=32, help="N for the memory check")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if not args.memory_only:
        throughput(args)
    memory(args)


if __name__ == "__main__":
    main()

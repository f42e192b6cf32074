"""Device choice shared by training and generation."""

import torch


def no_accelerator() -> bool:
    """True when neither CUDA nor MPS is present.

    Accelerate then needs `cpu=True` to join the processes that
    `accelerate launch --multi_gpu --num_processes N` starts (gloo backend);
    without it each CPU process would run alone and redo all the work.
    """
    mps = getattr(torch.backends, "mps", None)
    return not (torch.cuda.is_available() or (mps is not None and mps.is_available()))

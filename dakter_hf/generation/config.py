"""What a generation samples: the settings a user picks, and the record kept in the output folder.

    settings = GenerationSettings(num_samples=1000, num_inference_steps=50, scheduler="dpm++")
    generate_dataset("outputs/model/pipeline", "outputs/generated", settings)

`GenerationSettings` holds the options of `dakter generate`. `GenerationConfig` is the same
settings resolved against one pipeline (the sampler's class name, the weights' precision)
plus what the pipeline itself fixes (b, class names, resolution, ...). It is written to
`OUT/generation_config.json`, and a resumed run must match it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import List, Optional

from dakter_hf.pipelines.pipeline_dakter import LABEL_NOISE_READINGS, check_soft_label_options


CONFIG_NAME = "generation_config.json"

# The distillation temperature T at which the card reports the float16 cost of the stored soft labels:
# the paper's T = 2, the students' KD_TEMPERATURE. Generation sits beside the students and does not
# import them, so the value is written here too, and a test keeps the two equal.
KL_TEMPERATURE = 2.0

# the soft-label settings a source does not use, left out of its record
UNRECORDED_BY_SOURCE = {
    "final": ("soft_label_source", "trajectory_steps", "posterior_timestep"),
    "trajectory": ("posterior_timestep",),
    "posterior": ("trajectory_steps",),
}
NOT_RECORDED = {"recorded": False}  # field metadata: changes how a run goes, never which samples it makes
CURATION_ONLY = {"recorded": "curation"}  # field metadata: recorded only by a curated generation (--match-real)


@dataclass
class GenerationSettings:
    """The options of one generation (`dakter generate` flags in brackets); checked on construction.

    Sample i always uses seed `base_seed + i`, so `batch_size` never changes the dataset.
    """

    num_samples: int  # N > 0 (-n)
    base_seed: int = 0  # sample i uses seed base_seed + i (--seed)
    shard_size: int = 256  # rows per parquet shard, the unit of resumption (--shard-size)
    num_inference_steps: int = 200  # sampler steps; the paper: 200 DDIM steps (--steps)
    eta: float = 0.0  # DDIM eta; 0 is deterministic, as in the paper (--eta)
    label_noise: str = "consistent"  # see DAKTerPipeline (--label-noise)
    license: str = "other"  # licence field of the dataset card (--license)
    scheduler: Optional[str] = None  # ddim, dpm++, unipc, ... (schedulers.SCHEDULERS); None: as saved (--scheduler)
    dtype: Optional[str] = None  # fp32, fp16 or bf16 weights while sampling; None: as saved (--dtype)
    # where the soft label comes from: final (the paper), trajectory or posterior; see DAKTerPipeline (--soft-labels)
    soft_label_source: str = "final"
    trajectory_steps: int = 5  # `trajectory`: average the label probabilities of the last K steps (--trajectory-steps)
    # `posterior`: the label noise level of the read; None: the last training timestep (--posterior-timestep)
    posterior_timestep: Optional[int] = None
    # curation (curation.py): sample round(over_generate x N) candidates, keep the N matching the real set DATA.
    # DATA as given (--match-real); its fingerprint, not its path, is recorded (match_real_fingerprint)
    match_real: Optional[str] = field(default=None, metadata=NOT_RECORDED)
    over_generate: float = field(default=3.0, metadata=CURATION_ONLY)  # candidates per kept sample (--over-generate)
    batch_size: int = field(default=8, metadata=NOT_RECORDED)  # samples per pipeline call (--batch-size)
    save_to_disk: bool = field(default=True, metadata=NOT_RECORDED)  # also write OUT/hf (not --no-save-to-disk)
    # T of the float16 check (see KL_TEMPERATURE); the card and generation_config.json's soft_label_kl record it
    kl_temperature: float = field(default=KL_TEMPERATURE, metadata=NOT_RECORDED)

    def __post_init__(self) -> None:
        check_generation_options(
            self.num_samples, self.batch_size, self.shard_size, self.num_inference_steps, self.eta, self.label_noise
        )
        check_soft_label_options(self.soft_label_source, self.trajectory_steps, self.posterior_timestep)
        if isinstance(self.kl_temperature, bool) or not float(self.kl_temperature) > 0:
            raise ValueError(f"kl_temperature must be > 0, got {self.kl_temperature!r}")
        check_curation_options(self.num_samples, self.match_real, self.over_generate)

    @property
    def num_candidates(self) -> int:
        """Samples to make: round(over_generate x N) candidates when curating (--match-real), else N."""
        if self.match_real is None:
            return self.num_samples
        return max(self.num_samples, round(float(self.over_generate) * self.num_samples))


@dataclass(kw_only=True)
class GenerationConfig(GenerationSettings):
    """What a generated dataset was made from (`OUT/generation_config.json`); a resume must match it.

    The settings with `scheduler` and `dtype` resolved (a diffusers class name, a precision),
    plus what the pipeline fixes. Build it with `loading.prepare_pipeline`.
    """

    generator: str  # the pipeline folder or Hub id, as given
    balancing_factor: float
    class_names: List[str]
    resolution: int
    label_loss: str
    label_encoding: str
    image_prediction_type: str
    scheduler: str = "DDIMScheduler"  # the diffusers scheduler class that sampled
    dtype: str = "fp32"  # the weights' precision while sampling
    match_real_fingerprint: Optional[str] = field(default=None, metadata=CURATION_ONLY)  # curation.RealTarget's

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_samples / self.shard_size)

    def record(self) -> dict:
        """The fields that decide the samples: what `generation_config.json` holds and a resume compares."""
        recorded = {f.name for f in fields(self) if f.metadata.get("recorded", True)}
        # the soft-label source's settings only where they decide something: folders made before the
        # option (the paper's `final`) keep the record they had, and resume
        unused = set(UNRECORDED_BY_SOURCE[self.soft_label_source])
        if self.match_real is None:  # a generation without curation keeps the record it had before the option
            unused = unused | {f.name for f in fields(self) if f.metadata.get("recorded") == "curation"}
        return {k: v for k, v in asdict(self).items() if k in recorded and k not in unused}


def check_generation_options(num_samples, batch_size, shard_size, num_inference_steps, eta, label_noise) -> None:
    """Every generation option, before anything is written."""

    checks = {
        "-n/--num-samples": num_samples,
        "--batch-size": batch_size,
        "--shard-size": shard_size,
        "--steps": num_inference_steps,
    }
    for flag, value in checks.items():
        if value is None or isinstance(value, bool) or int(value) != value or value <= 0:
            raise ValueError(f"{flag} must be a whole number > 0, got {value!r}")
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"--eta must be in [0, 1], got {eta}")
    if label_noise not in LABEL_NOISE_READINGS:
        raise ValueError(f"--label-noise must be one of {LABEL_NOISE_READINGS}, got {label_noise!r}")


def check_curation_options(num_samples, match_real, over_generate) -> None:
    """--match-real DATA names a source; --over-generate FACTOR >= 1 gives a finite count of candidates."""
    if match_real is not None and (not isinstance(match_real, str) or not match_real):
        raise ValueError(f"--match-real must name the real training data, got {match_real!r}")
    if isinstance(over_generate, bool) or not isinstance(over_generate, (int, float)):
        raise ValueError(f"--over-generate must be a number >= 1, got {over_generate!r}")
    if not math.isfinite(over_generate) or over_generate < 1:
        raise ValueError(f"--over-generate must be a finite number >= 1, got {over_generate!r}")
    if not math.isfinite(over_generate * num_samples):
        raise ValueError(f"--over-generate {over_generate} of {num_samples} samples is not a finite count")

#!/usr/bin/env bash
# The GPU check of issue 18, in two parts of one device call each (docs/gpu.md: ~5-6 and ~8.5 min on an H200).
#
#   bash benchmarks/gpu_check.sh [--tiny] [--profile] [--dry-run] [--sos ROOT] [--out DIR] throughput|chain [DIR]
#
#   throughput  bench_sampling.py: DAKTerPipeline vs DDIMPipeline, small preset, 128 px, batch 128
#               bench_train.py --loop-only: the training loop vs the bare step, small preset, 128 px, batch 64
#               bench_train.py: paper preset, 256 px, batch 16, every speed option and all together
#               (images/s and MFU), in two runs: the eager options first, then torch.compile and all
#               together (minutes of compiling: a call cut short keeps the first); with --profile, one
#               training step under torch.profiler (top 10) between the two
#   chain       dakter experiment --config configs/experiments/sos_palsar_gpu_long.yaml on the SOS PALSAR
#               slice at 128 px (one DAKTer joint model, real vs DAKTer-KD SegFormer-b0 students, 3 seeds)
#   --tiny      (or GPU_CHECK_TINY=1) every size shrunk, on the CPU, about a minute per part: the rehearsal
#               (and the test, tests/benchmarks/test_gpu_check.py). The chain then runs a tiny experiment
#               file on synthetic scenes (simulate:N), no SOS needed. Its numbers are not GPU results.
#   --dry-run   (or GPU_CHECK_DRY_RUN=1) print the versions and the commands with their sizes, run none of them
#   --sos ROOT  the SOS copy for the chain and the loop (default .offline/sos, where offline-pack puts its
#               slice; SOS_ROOT=... works too)
#   DIR         where the results go (default $OUT, else outputs/gpu_check), as few files as the device tool
#               brings back (8 at most): PART.log, what is printed (the card, driver and versions, each command
#               and its printed lines and time, the goals); PART.err, each command's stderr (warnings, progress
#               bars) behind a "== NAME" line; for the chain also report.md and chain_report.tar.gz (the whole
#               report with its figures, the experiment file it ran, the joint model's card and loss log).
#               Work files (each command's stdout, the tiny chain's runs) go to GPU_CHECK_WORK (default: a
#               temporary folder, removed at the end in --tiny and --dry-run mode).
#
# On the GPU machine, from the project root, after ../shared/tools/offline-pack --sos-pairs 600 --test-pairs 200
# here: `. .offline/install.sh && bash benchmarks/gpu_check.sh throughput`, then the same with `chain`
# (docs/gpu.md, "How to run the GPU check"). Every size below is a variable: set it in the environment to
# change it (e.g. PAPER_STEPS=3 bash benchmarks/gpu_check.sh throughput). A failing command is reported
# and the next one runs; the exit status is 1 if any failed.
set -uo pipefail

TINY=${GPU_CHECK_TINY:-0}
PROFILE=${GPU_CHECK_PROFILE:-0}
DRY=${GPU_CHECK_DRY_RUN:-0}
SOS_ROOT=${SOS_ROOT:-.offline/sos}
DIR=""
PART=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) TINY=1; shift ;;
    --profile) PROFILE=1; shift ;;
    --dry-run) DRY=1; shift ;;
    --sos) SOS_ROOT=$2; shift 2 ;;
    --out) DIR=$2; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    throughput|chain) PART=$1; shift ;;
    -*) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
    *) [ -n "$PART" ] && [ -z "$DIR" ] || { echo "gpu_check.sh: unexpected $1" >&2; exit 2; }
       DIR=$1; shift ;;
  esac
done
USAGE="bash benchmarks/gpu_check.sh [--tiny] [--profile] [--dry-run] [--sos ROOT] [--out DIR] throughput|chain [DIR]"
[ -n "$PART" ] || { echo "usage: $USAGE" >&2; exit 2; }
[ "$TINY" = 1 ] || [ "$TINY" = 0 ] || { echo "GPU_CHECK_TINY must be 0 or 1, got $TINY" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
DIR=${DIR:-${OUT:-outputs/gpu_check}}
mkdir -p "$DIR" || exit 2
DIR=$(cd "$DIR" && pwd)
LOG=$DIR/$PART.log
ERR=$DIR/$PART.err
: > "$LOG"
: > "$ERR"
WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$WORK" || exit 2
WORK=$(cd "$WORK" && pwd)
TEMPORARY_WORK=0  # a folder of our own is removed at the end in --tiny and --dry-run mode
[ -n "${GPU_CHECK_WORK:-}" ] || { [ "$TINY" = 0 ] && [ "$DRY" = 0 ]; } || TEMPORARY_WORK=1
trap '[ "$TEMPORARY_WORK" = 0 ] || rm -rf "$WORK"' EXIT
PY=${PYTHON:-python3}
# the working tree's code, whatever else is on the path (offline-pack's install.sh puts a wheel of it in /tmp/site)
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ "$TINY" = 1 ]; then
  MODE="tiny (CPU rehearsal: tiny sizes, not GPU results)"
  DEVICE=${DEVICE:-cpu}
  # throughput
  SAMPLE_PRESET=${SAMPLE_PRESET:-tiny} SAMPLE_RES=${SAMPLE_RES:-32} SAMPLE_BATCH=${SAMPLE_BATCH:-2}
  SAMPLE_STEPS=${SAMPLE_STEPS:-2} SAMPLE_REPEATS=${SAMPLE_REPEATS:-1}
  LOOP_PRESET=${LOOP_PRESET:-tiny} LOOP_RES=${LOOP_RES:-32} LOOP_BATCH=${LOOP_BATCH:-2}
  LOOP_STEPS=${LOOP_STEPS:-8} LOOP_DATA=${LOOP_DATA:-simulate:16} DATA_STEPS=${DATA_STEPS:-2}
  PAPER_PRESET=${PAPER_PRESET:-tiny} PAPER_RES=${PAPER_RES:-32} PAPER_BATCH=${PAPER_BATCH:-2}
  PAPER_STEPS=${PAPER_STEPS:-1} PAPER_REPEATS=${PAPER_REPEATS:-1}
  COMPILED_OPTIONS=${COMPILED_OPTIONS:-all}  # inductor takes minutes on a CPU: `all` is skipped there, with the reason
  PROFILE_WARMUP=${PROFILE_WARMUP:-1}
  # chain
  CHAIN_SOURCE=${CHAIN_SOURCE:-simulate:12,6} CHAIN_RES=${CHAIN_RES:-32} JOINT_STEPS=${JOINT_STEPS:-4}
  STUDENT_STEPS=${STUDENT_STEPS:-2} CHAIN_SEEDS=${CHAIN_SEEDS:-[0, 1, 2]}
else
  MODE="full (GPU sizes)"
  DEVICE=${DEVICE:-cuda}
  SAMPLE_PRESET=${SAMPLE_PRESET:-small} SAMPLE_RES=${SAMPLE_RES:-128} SAMPLE_BATCH=${SAMPLE_BATCH:-128}
  SAMPLE_STEPS=${SAMPLE_STEPS:-50} SAMPLE_REPEATS=${SAMPLE_REPEATS:-5}
  LOOP_PRESET=${LOOP_PRESET:-small} LOOP_RES=${LOOP_RES:-128} LOOP_BATCH=${LOOP_BATCH:-64}
  LOOP_STEPS=${LOOP_STEPS:-100} DATA_STEPS=${DATA_STEPS:-20}
  if [ -z "${LOOP_DATA:-}" ]; then
    if [ -d "$SOS_ROOT/train/palsar" ]; then LOOP_DATA=sos:$SOS_ROOT; else LOOP_DATA=simulate:600; fi
  fi
  PAPER_PRESET=${PAPER_PRESET:-paper} PAPER_RES=${PAPER_RES:-256} PAPER_BATCH=${PAPER_BATCH:-16}
  PAPER_STEPS=${PAPER_STEPS:-4} PAPER_REPEATS=${PAPER_REPEATS:-2}
  COMPILED_OPTIONS=${COMPILED_OPTIONS:-compile,all}
  PROFILE_WARMUP=${PROFILE_WARMUP:-3}
  CHAIN_CONFIG=${CHAIN_CONFIG:-configs/experiments/sos_palsar_gpu_long.yaml}
  CHAIN_RUN=${CHAIN_RUN:-outputs/experiments/sos_palsar_gpu_long}
  JOINT_STEPS=${JOINT_STEPS:-}  # empty: the experiment file's max_train_steps
fi
EAGER_OPTIONS=${EAGER_OPTIONS:-fused_adamw,tf32,bf16,channels_last}
# PAPER_OPTIONS=LIST: one run with just these instead of the two (bench_train.py --options)
PAPER_OPTIONS=${PAPER_OPTIONS:-}

say() { printf '%s\n' "$*" | tee -a "$LOG"; }
FAILED=()
N=0
# run NAME CMD...: prints the command, its stdout (into PART.log, and WORK/NN-NAME.out for the goals) and its
# time; its stderr goes to PART.err behind "== NAME". Both stream, so a call killed at its limit keeps them.
run() {
  local name=$1 out rc start
  shift
  N=$((N + 1))
  out=$(printf '%s/%02d-%s.out' "$WORK" "$N" "$name")
  say ""
  say "== $name"
  say "\$ $*"
  LAST_OUT=/dev/null
  if [ "$DRY" = 1 ]; then
    say "-- (dry run: not run)"
    return 0
  fi
  start=$SECONDS
  printf '\n== %s\n$ %s\n' "$name" "$*" >> "$ERR"
  "$@" 2>> "$ERR" | tee -a "$LOG" "$out"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    FAILED+=("$name")
    say "-- $name FAILED (exit $rc) after $((SECONDS - start)) s; last lines of its stderr ($ERR):"
    tail -n 25 "$ERR" | tee -a "$LOG"
  else
    say "-- $name: $((SECONDS - start)) s"
  fi
  LAST_OUT=$out
  return 0
}

[ "$DRY" = 1 ] && MODE="$MODE, dry run"
say "# gpu_check.sh $PART: $MODE"
say "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  host: $(hostname 2> /dev/null || uname -n)  device: $DEVICE"
say "results: $DIR  work files: $WORK"
say ""
say "== the card, driver and versions"
if command -v nvidia-smi > /dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$LOG"
  nvidia-smi 2>&1 | sed -n '1,4p' | tee -a "$LOG"
else
  say "nvidia-smi: not present (no NVIDIA driver on this machine)"
fi
if command -v git > /dev/null 2>&1 && git rev-parse --git-dir > /dev/null 2>&1; then
  changed=$(git diff --quiet HEAD -- dakter_hf benchmarks configs 2> /dev/null || echo ' + uncommitted changes')
  say "git: $(git rev-parse --short HEAD)$changed"
else
  say "git: not available here"
fi
# the GPU machine has no git: this hash names the code that ran (compare it with the same line here)
code=$(find dakter_hf benchmarks configs -type f \( -name '*.py' -o -name '*.sh' -o -name '*.yaml' \) | LC_ALL=C sort \
  | xargs sha256sum | sha256sum | cut -c1-16)
say "code sha256 (dakter_hf, benchmarks, configs): $code"
"$PY" - "$DEVICE" "$DRY" <<'PYEOF' 2>&1 | tee -a "$LOG"
import importlib.metadata, importlib.util, platform, sys
import torch
print(f"python {platform.python_version()}  torch {torch.__version__}  CUDA (torch build) {torch.version.cuda}  "
      f"cuDNN {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}  "
      f"CUDA available {torch.cuda.is_available()}  CPU threads {torch.get_num_threads()}")
for name in ("diffusers", "transformers", "accelerate", "datasets", "dakter_hf"):  # not imported: seconds each
    spec = importlib.util.find_spec(name)
    try:
        version = importlib.metadata.version(name.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        version = "(no metadata)"
    print(f"  {name} {version}  ({spec.origin if spec else 'not found: the commands that need it will fail'})")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}, "
              f"bf16 {torch.cuda.is_bf16_supported()}")
elif sys.argv[1].startswith("cuda"):
    print("no CUDA device: run with --tiny for the CPU rehearsal, or DEVICE=cpu")
    sys.exit(3 if sys.argv[2] != "1" else 0)
PYEOF
[ "${PIPESTATUS[0]}" -eq 0 ] || { say "stopping: the device $DEVICE is not usable"; exit 2; }


throughput() {
  local sampling loop paper
  say ""
  say "goals (issue 18): MFU >= 30 % at 256 px (paper preset, batch 16); the training loop >= 0.9x the bare"
  say "step (small preset, 128 px); sampling overhead DAKTerPipeline/DDIMPipeline <= 1.03x (small, 128 px, batch 128)."
  say "anchors (an H200 before the speed work): 89.5 img/s = 17 % of bf16 peak; loop 0.45x (513 vs 1129 img/s); 1.06x"
  run sampling "$PY" benchmarks/bench_sampling.py --device "$DEVICE" --preset "$SAMPLE_PRESET" \
    --resolution "$SAMPLE_RES" --batch "$SAMPLE_BATCH" --steps "$SAMPLE_STEPS" --repeats "$SAMPLE_REPEATS"
  sampling=$LAST_OUT
  run loop_vs_bare "$PY" benchmarks/bench_train.py --device "$DEVICE" --preset "$LOOP_PRESET" \
    --resolution "$LOOP_RES" --batch "$LOOP_BATCH" --loop-only --loop-steps "$LOOP_STEPS" --loop-data "$LOOP_DATA" \
    --data-steps "$DATA_STEPS"
  loop=$LAST_OUT
  local paper_runs=()
  if [ -n "$PAPER_OPTIONS" ]; then paper_runs=("train_throughput:$PAPER_OPTIONS"); else
    paper_runs=("train_throughput:$EAGER_OPTIONS" "profile" "train_compiled:$COMPILED_OPTIONS"); fi
  [ -z "$PAPER_OPTIONS" ] || [ "$PROFILE" = 0 ] || paper_runs+=("profile")
  local entry paper=()
  for entry in "${paper_runs[@]}"; do
    if [ "$entry" = profile ]; then
      [ "$PROFILE" = 1 ] || continue
      run profile "$PY" benchmarks/profile_step.py --device "$DEVICE" --preset "$PAPER_PRESET" \
        --resolution "$PAPER_RES" --batch "$PAPER_BATCH" --warmup "$PROFILE_WARMUP" --top 10
      continue
    fi
    run "${entry%%:*}" "$PY" benchmarks/bench_train.py --device "$DEVICE" --preset "$PAPER_PRESET" \
      --resolution "$PAPER_RES" --batch "$PAPER_BATCH" --steps "$PAPER_STEPS" --repeats "$PAPER_REPEATS" \
      --no-loop --no-memory --options "${entry#*:}"
    paper+=("$LAST_OUT")
  done
  [ "$DRY" = 0 ] || return 0
  say ""
  say "== goals against the numbers ($MODE)"
  local best all
  best=$(cat "${paper[@]}" | awk '/ MFU +[0-9.]+ %/ { for (i = 1; i < NF; i++) if ($i == "MFU") print $(i + 1) }' \
    | sort -g | tail -n 1)
  all=$(cat "${paper[@]}" | grep -E 'DAKTer \+ all ' | sed -E 's/^ +//')  # empty where it did not run
  if [ -n "$best" ]; then
    say "MFU >= 30 % (measured: $PAPER_PRESET, ${PAPER_RES} px, batch $PAPER_BATCH): best $best % ->" \
      "$(awk -v m="$best" 'BEGIN { print (m >= 30 ? "met" : "NOT met") }')"
  else
    say "MFU >= 30 % (measured: $PAPER_PRESET, ${PAPER_RES} px, batch $PAPER_BATCH): n/a on $DEVICE (no peak TFLOP/s)"
  fi
  say "  all options: ${all:-not run on $DEVICE (bf16, TF32 and fused AdamW need CUDA)}"
  local out
  for out in "${paper[@]}"; do say "  $(line '^fastest:' "$out")"; done
  say "loop >= 0.9x the bare step (measured: $LOOP_PRESET, ${LOOP_RES} px, batch $LOOP_BATCH, $LOOP_DATA):"
  say "  $(line 'training loop, decode once' "$loop")"
  say "  $(line 'training loop, --data_cache none' "$loop")"
  say "sampling overhead <= 1.03x (measured: $SAMPLE_PRESET, ${SAMPLE_RES} px, batch $SAMPLE_BATCH," \
    "$SAMPLE_STEPS steps):"
  say "  $(line '^ratio DAKTer/DDIM' "$sampling")"
}

line() {  # line PATTERN FILE: the first line of FILE matching PATTERN, unindented, or "missing"
  grep -m 1 -E "$1" "$2" | sed -E 's/^ +//' | grep . || echo "missing: no line matching '$1' in $2"
}

tiny_experiment() {  # the chain's experiment file at tiny sizes (synthetic scenes): $1
  cat > "$1" <<EOF
# written by benchmarks/gpu_check.sh --tiny: the chain's structure at tiny sizes, for a CPU; not a result
name: gpu_check_tiny
description: CPU rehearsal of the GPU chain (synthetic scenes, tiny sizes); its numbers mean nothing.
data: {source: "$CHAIN_SOURCE", num_classes: 2, size: $CHAIN_RES, seed: 0}
joint: {resolution: $CHAIN_RES, unet_preset: tiny, image_prediction: v, zero_terminal_snr: true, label_loss: ce,
        balancing_factor: auto, train_batch_size: 4, learning_rate: 1.0e-3, lr_warmup_steps: 1, use_ema: true,
        ema_decay: 0.999, channels_last: true, max_train_steps: $JOINT_STEPS, max_train_minutes: 2,
        checkpointing_steps: $JOINT_STEPS, checkpoints_total_limit: 1, logging_steps: 1, seed: 0}
generation: {scheduler: dpm++, steps: 2, batch_size: 4, seed: 0}
students:
  - {student: segformer-b0, resolution: $CHAIN_RES, per_device_train_batch_size: 4, max_steps: $STUDENT_STEPS,
     student_config: '{"hidden_sizes": [8, 16, 16, 16], "decoder_hidden_size": 16, "depths": [1, 1, 1, 1]}',
     learning_rate: 1.0e-3, logging_steps: 1, save_steps: 100000, save_total_limit: 1}
scales: [1.0]
seeds: $CHAIN_SEEDS
arms: [real, dakter-kd]
show_real_images: false
EOF
}

chain() {
  local config run_dir report=$WORK/report
  if [ "$TINY" = 1 ]; then
    config=$WORK/experiment.yaml
    tiny_experiment "$config"
    run_dir=$WORK/run
    say "experiment file: $config (tiny, $CHAIN_SOURCE, $CHAIN_RES px, $JOINT_STEPS joint steps, seeds $CHAIN_SEEDS)"
  else
    if [ ! -d "$SOS_ROOT/train/palsar" ] || [ ! -d "$SOS_ROOT/test/palsar/sat" ]; then
      say "no SOS PALSAR slice at $SOS_ROOT (train/palsar, test/palsar/sat): run ../shared/tools/offline-pack"
      say "--sos-pairs 600 --test-pairs 200 before the device call (it writes .offline/sos), or pass --sos ROOT"
      [ "$DRY" = 1 ] || { say "stopping"; return 1; }
    else
      say "SOS slice: $SOS_ROOT ($(find "$SOS_ROOT/train/palsar" -name '*_sat.jpg' | wc -l) train,"\
        "$(find "$SOS_ROOT/test/palsar/sat" -type f | wc -l) test pairs)"
    fi
    config=$CHAIN_CONFIG
    if [ "$SOS_ROOT" != .offline/sos ] || [ -n "$JOINT_STEPS" ]; then
      config=$WORK/experiment.yaml  # the file with the SOS root / joint steps changed (the report embeds it)
      sed -e "s#^  source: sos:.*#  source: sos:$SOS_ROOT#" \
        ${JOINT_STEPS:+-e "s#^  max_train_steps: [0-9]*#  max_train_steps: $JOINT_STEPS#"} "$CHAIN_CONFIG" > "$config"
    fi
    run_dir=$CHAIN_RUN
    say "experiment file: $config; step cache: $run_dir (a second call continues it)"
  fi
  [ "$config" = "$WORK/experiment.yaml" ] || cp "$config" "$WORK/experiment.yaml"
  run experiment "$PY" -m dakter_hf.cli experiment --config "$config" --out "$run_dir" --report-dir "$report"
  [ "$DRY" = 0 ] || return 0
  say ""
  say "== the joint model: card and training rate"
  local joint title
  for joint in "$run_dir"/joint/*/work; do
    [ -d "$joint" ] || { say "no joint model under $run_dir/joint"; break; }
    title=$(grep -m 1 -E '^# ' "$joint/pipeline/README.md" 2> /dev/null || echo 'missing')
    say "$(basename "$(dirname "$joint")"): card: $title"
    say "  last log line: $(tail -n 1 "$joint/loss_history.jsonl" 2> /dev/null || echo 'missing')"
    cp "$joint/pipeline/README.md" "$WORK/joint_card.md" 2> /dev/null || true
    cp "$joint/loss_history.jsonl" "$WORK/joint_loss_history.jsonl" 2> /dev/null || true
  done
  say ""
  say "== the report ($report/report.md)"
  if [ -f "$report/report.md" ]; then
    sed -n '1,/^## Experiment file/p' "$report/report.md" | tee -a "$LOG"
    cp "$report/report.md" "$DIR/report.md"
  else
    say "no report"
  fi
  local parts=() name
  for name in report experiment.yaml joint_card.md joint_loss_history.jsonl; do
    [ -e "$WORK/$name" ] && parts+=("$name")
  done
  [ ${#parts[@]} -gt 0 ] || return 0
  tar -czf "$DIR/chain_report.tar.gz" -C "$WORK" "${parts[@]}"
  say "chain_report.tar.gz: ${parts[*]} ($(du -h "$DIR/chain_report.tar.gz" | cut -f1);" \
    "the device tool brings back at most 16 MiB a file)"
}

if [ "$PART" = throughput ]; then throughput; else chain || FAILED+=(chain); fi
say ""
if [ ${#FAILED[@]} -gt 0 ]; then
  say "gpu_check.sh $PART: FAILED: ${FAILED[*]} (log: $LOG)"
  exit 1
fi
say "gpu_check.sh $PART: done in $SECONDS s (log: $LOG)"

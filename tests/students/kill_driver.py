"""Kill real `training/train_student.py` runs at chosen file operations, resume them, record what happened.

    python tests/students/kill_driver.py PLAN.json RESULT.json

Used by `test_resume.py`. The driver imports the package once, then runs each training process as a
forked child that executes `training/train_student.py` (runpy, `__main__`), so a kill point costs a
run, not a Python start-up. In a child, every write, rename and removal under its `--output_dir`
(`open` for writing, `torch.save`, safetensors' `save_file`, `os.replace`/`os.rename`, `os.remove`,
`shutil.rmtree`) is an event with a key like `write:checkpoint-2.tmp/checkpoint-2/optimizer.pt#1`.
A child given a kill point (key, mode) sends itself SIGKILL there: mode "after" once the operation is
done, mode "torn" in the middle of it (a file cut to half its length, a folder half removed, a rename
not made).

PLAN: {"argv": [...], "reference": DIR, "chains": DIR, "keys": "all" | "some"}. The driver runs the
reference uninterrupted (its events are the kill points), then goes through the kill points in order,
each in a fresh child with `--resume_from_checkpoint latest` in the current chain folder; a child that
ends without reaching its kill point has finished the chain, and a new chain folder starts.
"""

import builtins
import json
import os
import re
import runpy
import shutil
import signal
import sys
import traceback


REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, REPO)

import torch  # noqa: E402
import transformers.modeling_utils as modeling_utils  # noqa: E402

import dakter_hf.students.train  # noqa: E402, F401  (imported once, before any fork)
from dakter_hf.students.trainer import DAKTerTrainer  # noqa: E402


SCRIPT = os.path.join(REPO, "training", "train_student.py")
REAL_OPEN = builtins.open
_RANDOM_NAME = re.compile(r"\.[0-9a-f]{12}\.tmp$")  # utils.files' temporary names


class Events:
    """The child's file operations under `out`, logged, with the kill point armed."""

    def __init__(self, out, kill, log_path):
        self.out, self.kill = os.path.abspath(out), kill
        self.counts, self.phase = {}, "claim"  # "train" once Trainer.train begins (a resumed run claims nothing)
        self.log = open(log_path, "a", encoding="utf-8")

    def inside(self, path) -> bool:
        try:
            path = os.path.abspath(os.fspath(path))
        except TypeError:
            return False
        return path == self.out or path.startswith(self.out + os.sep)

    def key(self, op, path) -> str:
        name = _RANDOM_NAME.sub(".*.tmp", os.path.relpath(os.path.abspath(os.fspath(path)), self.out))
        base = f"{self.phase}/{op}:{name}"
        self.counts[base] = self.counts.get(base, 0) + 1
        key = f"{base}#{self.counts[base]}"
        self.log.write(key + "\n")
        self.log.flush()
        return key

    def armed(self, key):
        return self.kill[1] if self.kill and self.kill[0] == key else None

    def note(self, line):
        self.log.write(line + "\n")
        self.log.flush()


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def cut(path):
    size = os.path.getsize(path)
    with REAL_OPEN(path, "r+b") as handle:
        handle.truncate(size // 2)


class DyingFile:
    """A file handle whose close ends the process (after cutting the file, for "torn")."""

    def __init__(self, handle, path, mode):
        self._handle, self._path, self._mode = handle, path, mode

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __iter__(self):
        return iter(self._handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        self._handle.close()
        if self._mode == "torn":
            cut(self._path)
        die()


def install(events):
    real_open, real_save = builtins.open, torch.save
    real_safe, real_replace, real_rename = modeling_utils.safe_save_file, os.replace, os.rename
    real_remove, real_rmtree = os.remove, shutil.rmtree

    def around_write(path, write):
        if not events.inside(path):
            return write()
        mode = events.armed(events.key("write", path))
        result = write()
        if mode == "torn":
            cut(path)
        if mode:
            die()
        return result

    def patched_open(file, mode="r", *args, **kwargs):
        if not (isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and events.inside(file)):
            return real_open(file, mode, *args, **kwargs)
        armed = events.armed(events.key("write", file))
        handle = real_open(file, mode, *args, **kwargs)
        return DyingFile(handle, file, armed) if armed else handle

    def patched_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            return around_write(f, lambda: real_save(obj, f, *args, **kwargs))
        return real_save(obj, f, *args, **kwargs)

    def patched_safe(tensors, filename, *args, **kwargs):
        return around_write(filename, lambda: real_safe(tensors, filename, *args, **kwargs))

    def moving(real):
        def patched(src, dst, *args, **kwargs):
            if not (events.inside(src) or events.inside(dst)):
                return real(src, dst, *args, **kwargs)
            mode = events.armed(events.key("rename", dst))
            if mode == "torn":
                die()
            result = real(src, dst, *args, **kwargs)
            if mode:
                die()
            return result

        return patched

    def patched_remove(path, *args, **kwargs):
        if not events.inside(path):
            return real_remove(path, *args, **kwargs)
        mode = events.armed(events.key("remove", path))
        if mode == "torn":
            die()
        result = real_remove(path, *args, **kwargs)
        if mode:
            die()
        return result

    def patched_rmtree(path, *args, **kwargs):
        if not (events.inside(path) and os.path.isdir(path)):
            return real_rmtree(path, *args, **kwargs)
        mode = events.armed(events.key("rmtree", path))
        if mode == "torn":  # half of the files gone, the rest and the folder still there
            files = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
            for name in files[: (len(files) + 1) // 2]:
                real_remove(name)
            die()
        result = real_rmtree(path, *args, **kwargs)
        if mode:
            die()
        return result

    real_train = DAKTerTrainer.train

    def noting_train(self, resume_from_checkpoint=None, *args, **kwargs):
        where = os.path.basename(resume_from_checkpoint) if resume_from_checkpoint else "none"
        events.note(f"resume:{where}")
        events.phase = "train"
        return real_train(self, resume_from_checkpoint, *args, **kwargs)

    builtins.open, torch.save, modeling_utils.safe_save_file = patched_open, patched_save, patched_safe
    os.replace, os.rename, os.remove, shutil.rmtree = (
        moving(real_replace),
        moving(real_rename),
        patched_remove,
        patched_rmtree,
    )
    DAKTerTrainer.train = noting_train


def child(out, argv, kill, log_path):
    install(Events(out, kill, log_path))
    sys.argv = [SCRIPT, *argv, "--output_dir", out]
    runpy.run_path(SCRIPT, run_name="__main__")


def run(out, argv, kill, log_path):
    """One training process (a forked child); its exit code (-9: killed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child(out, argv, kill, log_path)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def read_log(path):
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def checkpoints_in(folder):
    if not os.path.isdir(folder):
        return []
    steps = [int(n.split("-")[1]) for n in os.listdir(folder) if re.fullmatch(r"checkpoint-\d+", n)]
    return [f"checkpoint-{s}" for s in sorted(steps)]


def select(keys, which):
    """All kill points, or (default) every write of one checkpoint save with its rename and rotation, the
    claim, the end of the run, and every third of the rest."""
    if which == "all":
        return keys
    end = {
        "train/write:model.safetensors#1",
        "train/write:trainer_state.json#1",
        "train/write:.all_results.json.*.tmp#1",  # merged into by the next attempt
        "train/rename:test_metrics.json#1",
        "train/write:..dakter.json.*.tmp#1",
    }
    first = {"train/write:checkpoint-1.tmp/checkpoint-1/model.safetensors#1", "train/rename:checkpoint-1#1"}
    return [
        k
        for k in keys
        if k.startswith("claim/") or "checkpoint-3" in k or "rmtree:checkpoint-1#" in k or k in first | end
    ]


def main(plan_path, result_path):
    with open(plan_path, encoding="utf-8") as handle:
        plan = json.load(handle)
    argv, work = plan["argv"], plan["work"]
    os.makedirs(work, exist_ok=True)
    reference = os.path.join(work, "reference")
    code = run(reference, argv, None, os.path.join(work, "reference.log"))
    if code != 0:
        raise SystemExit(f"the reference run failed ({code})")
    keys = [k for k in read_log(os.path.join(work, "reference.log")) if not k.startswith("resume:")]
    chosen = select(keys, plan.get("keys", "some"))
    resume = ["--resume_from_checkpoint", "latest"]
    chains, kills = [], []
    out = os.path.join(work, "chain-0")
    points = [(key, mode) for key in chosen for mode in ("torn", "after")]
    while points:
        key, mode = points[0]
        log = os.path.join(work, f"run-{len(kills)}.log")
        before = checkpoints_in(out)
        code = run(out, argv + resume, (key, mode), log)
        lines = read_log(log) if os.path.isfile(log) else []
        resumed = [line.split(":", 1)[1] for line in lines if line.startswith("resume:")]
        kills.append(
            {
                "key": key,
                "mode": mode,
                "code": code,
                "chain": out,
                "checkpoints_before": before,
                "resumed_from": resumed[0] if resumed else None,
                "reached": key in lines,
            }
        )
        if code == 0 and key not in lines:
            # the run finished without passing the kill point (e.g. the staging folder's removal, done by the
            # claim after a kill between the rename and it): the chain is done; try the point on a fresh one
            chains.append(out)
            out = os.path.join(work, f"chain-{len(chains)}")
            if len(chains) > len(chosen):
                break
            continue
        points.pop(0)
        if code != -signal.SIGKILL:
            break
    if os.path.isdir(out):
        code = run(out, argv + resume, None, os.path.join(work, "last.log"))
        kills.append({"key": None, "mode": None, "code": code, "chain": out, "checkpoints_before": None})
        chains.append(out)
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump({"reference": reference, "keys": keys, "chosen": chosen, "kills": kills, "chains": chains}, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

#!/usr/bin/env bash
# The test command of the README and of .ci/run. On a fresh Debian machine with nothing but Python it
# installs what the tests need (Debian's chromium for the Space's browser test, a .venv with
# torch==2.13.0 and the `test` extra), then runs pytest, `ruff check` and `lint-imports`.
# The exit status is non-zero when any of the three fails (pytest's 5, "no tests collected", too).
# Arguments go to pytest: `bash scripts/test.sh tests/data -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "scripts/test.sh: needs root or sudo for: $*" >&2; return 1
  fi
}

# --- system packages, only the missing ones (a failed install stops here) ---
missing=()
# tests/space/test_browser.py drives Debian's chromium with playwright (no browser download)
if [ -z "${DAKTER_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then missing+=(chromium); fi
# Debian's own python3 makes a venv only with python3-venv (ensurepip)
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then missing+=(python3-venv); fi
if [ "${#missing[@]}" -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# --- the environment: torch pinned first (a CPU build of it is on the development machines) ---
python3 -m venv .venv
. .venv/bin/activate
pip install torch==2.13.0
pip install -e ".[test]"

# --- the checks: all three run, any failure fails the script ---
failed=()
HF_HUB_OFFLINE=1 python -m pytest "$@" || failed+=("pytest (exit $?)")
ruff check || failed+=("ruff check")
lint-imports --no-logo || failed+=("lint-imports")
if [ "${#failed[@]}" -gt 0 ]; then
  echo "scripts/test.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "scripts/test.sh: pytest, ruff check and lint-imports passed"

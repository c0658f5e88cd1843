#!/usr/bin/env bash
# Train on this machine (CPU or one/several local GPUs): one process, all local devices.
#
#   launch/local.sh [--dry-run] CONFIG WORKDIR [--config.KEY=VALUE ...]
#   launch/local.sh configs/demo.py demo_out/train --config.total_steps=20
#
# Rerunning the same command resumes from WORKDIR/checkpoints.
set -euo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
if [[ $# -lt 2 ]]; then
  echo "usage: $0 [--dry-run] CONFIG WORKDIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
CONFIG="$1"; WORKDIR="$2"; shift 2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$HERE/.venv/bin/python}"

run() {
  printf '+'; printf ' %q' "$@"; printf '\n'  # shell-quoted: copy-pastable as printed
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}

cd "$HERE"
run "$PYTHON" -m ldattn_jax.train --config "$CONFIG" --workdir "$WORKDIR" "$@"

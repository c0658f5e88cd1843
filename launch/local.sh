#!/usr/bin/env bash
# Train on this machine (CPU or one/several local GPUs): one process, all local devices.
#
#   launch/local.sh [--dry-run] CONFIG WORKDIR [--config.KEY=VALUE ...]
#   launch/local.sh configs/demo.py demo_out/train --config.total_steps=20
#
# Relative paths (CONFIG, WORKDIR, data.dir, ...) are taken from the directory
# you run this in, as with `python -m ldattn_jax.train`; the code is always this
# checkout's. Rerunning the same command resumes from WORKDIR/checkpoints.
set -euo pipefail

usage() { echo "usage: $0 [--dry-run] CONFIG WORKDIR [--config.KEY=VALUE ...]" >&2; }
# Options come before CONFIG, with - or _ alike as for every ldattn_jax command
# (--dry_run is --dry-run); `--` ends them. Any other --word there is refused:
# taken as CONFIG, it made train fail on a config path that is really a typo.
DRY_RUN=0
while [[ "${1:-}" == --* ]]; do
  arg="$1"; opt="${arg//_/-}"; shift
  case "$opt" in
    --) break ;;
    --dry-run) DRY_RUN=1 ;;
    *) echo "unknown option before CONFIG: $arg" >&2; usage; exit 2 ;;
  esac
done
if [[ $# -lt 2 ]]; then usage; exit 2; fi
CONFIG="$1"; WORKDIR="$2"; shift 2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$HERE/.venv/bin/python}"

run() {
  printf '+'; printf ' %q' "$@"; printf '\n'  # shell-quoted: copy-pastable as printed
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}

# No cd into the checkout: a cd would make a relative CONFIG, WORKDIR or
# --config.data.dir point into the checkout instead of where the user typed
# them. PYTHONPATH gives `-m ldattn_jax.train` this checkout's code from any
# directory (what the cd did: python puts the cwd first on sys.path), also for
# a PYTHON without an editable install of it; `env` keeps it in the printed command.
run env PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" \
  "$PYTHON" -m ldattn_jax.train --config "$CONFIG" --workdir "$WORKDIR" "$@"

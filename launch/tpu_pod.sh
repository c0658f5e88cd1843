#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: create (or reuse) it, install the project on
# every worker, run the SAME train command on all workers. The workdir must be
# on GCS (gs://...) so that every host writes its shards of the checkpoint to
# one place; jax.distributed.initialize() finds the other hosts by itself.
#
#   launch/tpu_pod.sh [--dry-run] --name NAME --zone ZONE --type v4-32 \
#       --config configs/ffpp.py --workdir gs://BUCKET/runs/ffpp \
#       [--version tpu-ubuntu2204-base] [--project PROJECT] [--spot] \
#       [--python PATH] [--config.KEY=VALUE ...]
#
# What is copied: the files git sees in this checkout (tracked, and untracked
# but not ignored), so no outputs (demo_out/, runs/, shards, wheels); outside a
# git checkout, everything but .venv and .git.
#
# Python: the project needs >= 3.11 and the default image has 3.10. On every
# worker the install uses --python PATH (an interpreter on the workers) if
# given, else python3.12 or python3.11 if there, else installs python3.11 with
# apt (Ubuntu 22.04 has it in jammy-updates).
#
# Preemption (spot/maintenance): every worker saves at the same step and exits;
# rerun this script and training resumes from the workdir. Training runs inside
# the ssh session of step 3; on SIGHUP the workers save and stop; the script
# prints how to stop workers left running after a dropped session, then rerun.
set -euo pipefail

DRY_RUN=0; NAME=""; ZONE=""; TYPE=""; CONFIG=""; WORKDIR=""; PROJECT=""
VERSION="tpu-ubuntu2204-base"; SPOT=""; REMOTE_PYTHON=""; OVERRIDES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --type) TYPE="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --spot) SPOT="--spot"; shift ;;
    --python) REMOTE_PYTHON="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    --config.*) OVERRIDES+=("$1"); shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
for v in NAME ZONE TYPE CONFIG WORKDIR; do
  if [[ -z "${!v}" ]]; then echo "missing --${v,,}" >&2; exit 2; fi
done
if [[ "$WORKDIR" != gs://* ]]; then
  echo "--workdir must be a gs:// path: all TPU hosts write one checkpoint there" >&2
  exit 2
fi
PROJECT_FLAG=()
if [[ -n "$PROJECT" ]]; then PROJECT_FLAG=(--project "$PROJECT"); fi

run() {
  printf '+'; printf ' %q' "$@"; printf '\n'  # shell-quoted: copy-pastable as printed
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}

# 1. Create the slice unless it exists (reuse keeps its installed environment).
if [[ "$DRY_RUN" == 1 ]] || ! gcloud compute tpus tpu-vm describe "$NAME" --zone "$ZONE" \
    "${PROJECT_FLAG[@]}" >/dev/null 2>&1; then
  run gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" "${PROJECT_FLAG[@]}" \
    --accelerator-type "$TYPE" --version "$VERSION" $SPOT
fi

# 2. Copy the project (this checkout) to every worker and install it with TPU jax.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/ldattn_jax_src.XXXXXX")"  # one per run: no clash
# A dry run keeps it (a file list): the tar and scp commands it prints name it.
if [[ "$DRY_RUN" == 0 ]]; then trap 'rm -rf "$STAGE"' EXIT; fi
ARCHIVE="$STAGE/src.tar.gz"
if command -v git >/dev/null 2>&1 && git -C "$HERE" rev-parse --is-inside-work-tree >/dev/null 2>&1
then
  # Only what git sees: the git-ignored outputs (demo_out/ alone is ~0.5 GB,
  # runs, shards, wheels) would otherwise go to every worker. A tracked file
  # deleted from the working tree is still listed: skip it, tar would stop on it.
  FILES="$STAGE/files"
  git -C "$HERE" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do
        if [[ -e "$HERE/$f" || -L "$HERE/$f" ]]; then printf '%s\0' "$f"; fi
      done >"$FILES"
  echo "# $(tr -cd '\0' <"$FILES" | wc -c | tr -d ' ') files of $HERE" \
    "(git ls-files --cached --others --exclude-standard), listed in $FILES"
  run tar -C "$HERE" --null -T "$FILES" -czf "$ARCHIVE"
else
  run tar -C "$HERE" --exclude .venv --exclude .git -czf "$ARCHIVE" .
fi
run gcloud compute tpus tpu-vm scp "$ARCHIVE" "$NAME:~/ldattn_jax_src.tar.gz" \
  --worker=all --zone "$ZONE" "${PROJECT_FLAG[@]}"

# The install, one sh script run by each worker's login shell. The project
# needs Python >= 3.11 (pyproject's requires-python, and the jax, flax and grain
# pins) while tpu-ubuntu2204-base has 3.10: with its python3, pip fails on every
# worker. A .venv of an older Python (left by such a failed install) is remade.
INSTALL='set -e
PY='"$(printf '%q' "$REMOTE_PYTHON")"'
if [ -z "$PY" ]; then
  for c in python3.12 python3.11; do
    if command -v "$c" >/dev/null 2>&1; then PY="$c"; break; fi
  done
fi
if [ -z "$PY" ]; then
  echo "ldattn_jax: no python3.12/python3.11 on $(hostname): installing python3.11 with apt" >&2
  sudo apt-get update -q && sudo apt-get install -y -q python3.11 python3.11-venv
  PY=python3.11
fi
if ! "$PY" -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>/dev/null; then
  echo "ldattn_jax needs Python >= 3.11, but $PY on $(hostname) is" \
    "$("$PY" -V 2>/dev/null || echo missing). Pass launch/tpu_pod.sh --python PATH" \
    "(a Python >= 3.11 on every worker) or a --version image that has one." >&2
  exit 1
fi
if ! "$PY" -c "import ensurepip, venv" 2>/dev/null; then
  echo "ldattn_jax: $PY cannot make a venv: installing $(basename "$PY")-venv with apt" >&2
  sudo apt-get update -q && sudo apt-get install -y -q "$(basename "$PY")-venv"
fi
mkdir -p ~/ldattn_jax && tar -C ~/ldattn_jax -xzf ~/ldattn_jax_src.tar.gz && cd ~/ldattn_jax
if [ -e .venv ] && ! .venv/bin/python -c "import sys; sys.exit(sys.version_info < (3, 11))"
then
  rm -rf .venv
fi
"$PY" -m venv .venv
.venv/bin/pip install -q -e ".[gcs]"
.venv/bin/pip install -q "jax[tpu]==0.10.2"'
run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all --zone "$ZONE" "${PROJECT_FLAG[@]}" \
  --command "$INSTALL"

# 3. The same train command on every worker (jax.distributed finds the others).
# One string for the remote shell: every argument quoted, so paths and overrides
# with spaces, quotes or brackets arrive as given.
TRAIN="cd ~/ldattn_jax && .venv/bin/python -m ldattn_jax.train"
for a in --config "$CONFIG" --workdir "$WORKDIR" "${OVERRIDES[@]}"; do
  TRAIN+=" $(printf '%q' "$a")"
done
# gcloud runs a --command without a terminal, and sshd sends no SIGHUP to such a
# command when the connection ends: the workers may train on without it, and
# hold the TPU that a rerun needs. Hence the stop command in the hint.
STOP=(gcloud compute tpus tpu-vm ssh "$NAME" --worker=all --zone "$ZONE" "${PROJECT_FLAG[@]}"
  --command 'pkill -HUP -f "[l]dattn_jax[.]train" || true')
cat >&2 <<END
Training runs inside this ssh session on every worker: keep it open until the
run ends. If it ends early (Ctrl-C, a dropped connection), workers that get
SIGHUP save a checkpoint at the same step and stop, but they may also train on
without the session. Before rerunning, stop any that still run (on SIGHUP they
save first):
  $(printf '%q ' "${STOP[@]}")
then rerun this same command: training resumes from the latest checkpoint in
$WORKDIR.
END
run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all --zone "$ZONE" "${PROJECT_FLAG[@]}" \
  --command "$TRAIN"

#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: create (or reuse) it, install the project on
# every worker, run the SAME train command on all workers. The workdir must be
# on GCS (gs://...) so that every host writes its shards of the checkpoint to
# one place; jax.distributed.initialize() finds the other hosts by itself.
#
#   launch/tpu_pod.sh [--dry-run] --name NAME --zone ZONE --type v4-32 \
#       --config configs/ffpp.py --workdir gs://BUCKET/runs/ffpp \
#       [--version tpu-ubuntu2204-base] [--project PROJECT] [--spot] [--config.KEY=VALUE ...]
#
# Preemption (spot/maintenance): every worker saves at the same step and exits;
# rerun this script and training resumes from the workdir.
set -euo pipefail

DRY_RUN=0; NAME=""; ZONE=""; TYPE=""; CONFIG=""; WORKDIR=""; PROJECT=""
VERSION="tpu-ubuntu2204-base"; SPOT=""; REPO_URL="${REPO_URL:-}"; OVERRIDES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --type) TYPE="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --spot) SPOT="--spot"; shift ;;
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
ARCHIVE="/tmp/ldattn_jax_src.tar.gz"
run tar -C "$HERE" --exclude .venv --exclude .git -czf "$ARCHIVE" .
run gcloud compute tpus tpu-vm scp "$ARCHIVE" "$NAME:~/ldattn_jax_src.tar.gz" \
  --worker=all --zone "$ZONE" "${PROJECT_FLAG[@]}"
INSTALL='mkdir -p ~/ldattn_jax && tar -C ~/ldattn_jax -xzf ~/ldattn_jax_src.tar.gz && cd ~/ldattn_jax && python3 -m venv .venv && .venv/bin/pip install -q -e ".[gcs]" && .venv/bin/pip install -q "jax[tpu]==0.10.2"'
run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all --zone "$ZONE" "${PROJECT_FLAG[@]}" \
  --command "$INSTALL"

# 3. The same train command on every worker (jax.distributed finds the others).
# One string for the remote shell: every argument quoted, so paths and overrides
# with spaces, quotes or brackets arrive as given.
TRAIN="cd ~/ldattn_jax && .venv/bin/python -m ldattn_jax.train"
for a in --config "$CONFIG" --workdir "$WORKDIR" "${OVERRIDES[@]}"; do
  TRAIN+=" $(printf '%q' "$a")"
done
run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all --zone "$ZONE" "${PROJECT_FLAG[@]}" \
  --command "$TRAIN"

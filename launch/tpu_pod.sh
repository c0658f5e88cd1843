#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: create (or reuse) it, install the project on
# every worker, run the SAME train command on all workers. The workdir must be
# on GCS (gs://...) so that every host writes its shards of the checkpoint to
# one place; jax.distributed.initialize() finds the other hosts by itself.
#
#   launch/tpu_pod.sh [--dry-run] --name NAME --zone ZONE --type v4-32 \
#       --config configs/ffpp.py --workdir gs://BUCKET/runs/ffpp \
#       [--version VERSION] [--project PROJECT] [--spot] \
#       [--python PATH] [--config.KEY=VALUE ...]
#
# Flags as every ldattn_jax command takes them: `--flag value` or
# `--flag=value`, with - or _ alike in the name (--dry_run is --dry-run). The
# --config.KEY=VALUE overrides go to train exactly as written.
#
# --version (the TPU software version, the VM image) defaults by the type, as in
# Google's table (cloud.google.com/tpu/docs/runtimes, "PyTorch and JAX"): v5e
# (v5litepod-*) v2-alpha-tpuv5-lite, v5p (v5p-*) v2-alpha-tpuv5, v6e (v6e-*)
# v2-alpha-tpuv6e, v2/v3/v4 tpu-ubuntu2204-base; the base image on a v5e, v5p
# or v6e is an invalid pairing. Other types need an explicit --version.
#
# What is copied: the files git sees in this checkout (tracked, and untracked
# but not ignored), so no outputs (demo_out/, runs/, shards, wheels); outside a
# git checkout, everything but .venv and .git. On a reused worker, the files the
# last run shipped and this one does not (deleted from the checkout) are removed
# from ~/ldattn_jax, so they cannot be imported; nothing else there is touched
# (a venv, shards or outputs kept beside the code stay).
#
# Python: the project needs >= 3.11 and the Ubuntu 22.04 images have 3.10. On
# every worker the install uses --python PATH (an interpreter on the workers) if
# given, else python3.12 or python3.11 if there, else installs python3.11 with
# apt (Ubuntu 22.04 has it in jammy-updates).
#
# Preemption (spot/maintenance): every worker saves at the same step and exits;
# rerun this script and training resumes from the workdir. A preempted slice is
# still listed (state PREEMPTED or TERMINATED) and can run nothing: with --spot
# the rerun deletes and recreates it; without, it stops and prints the delete
# command. A slice still CREATING (or STARTING, REPAIRING, ...) is waited for,
# up to TPU_READY_TIMEOUT seconds (default 1800; polled every TPU_POLL_SECONDS,
# default 30). Training runs inside the ssh session of step 3; on SIGHUP the
# workers save and stop; the script prints how to stop workers left running
# after a dropped session, then rerun.
set -euo pipefail

DRY_RUN=0; NAME=""; ZONE=""; TYPE=""; CONFIG=""; WORKDIR=""; PROJECT=""
VERSION=""; SPOT=""; REMOTE_PYTHON=""; OVERRIDES=()
while [[ $# -gt 0 ]]; do
  arg="$1"; shift
  # An override names a config field: passed on as written (its _ are the field's).
  if [[ "$arg" == --config.* ]]; then OVERRIDES+=("$arg"); continue; fi
  flag="$arg"; value=""; has_value=0
  if [[ "$flag" == --*=* ]]; then value="${flag#*=}"; flag="${flag%%=*}"; has_value=1; fi
  if [[ "$flag" == --* ]]; then flag="${flag//_/-}"; fi  # --dry_run is --dry-run
  case "$flag" in
    --dry-run|--spot)
      if [[ "$has_value" == 1 ]]; then echo "$flag takes no value: $arg" >&2; exit 2; fi
      if [[ "$flag" == --dry-run ]]; then DRY_RUN=1; else SPOT="--spot"; fi ;;
    --name|--zone|--type|--version|--project|--python|--config|--workdir)
      if [[ "$has_value" == 0 ]]; then
        if [[ $# -eq 0 ]]; then echo "missing value for $flag" >&2; exit 2; fi
        value="$1"; shift
      fi
      case "$flag" in
        --name) NAME="$value" ;;
        --zone) ZONE="$value" ;;
        --type) TYPE="$value" ;;
        --version) VERSION="$value" ;;
        --project) PROJECT="$value" ;;
        --python) REMOTE_PYTHON="$value" ;;
        --config) CONFIG="$value" ;;
        --workdir) WORKDIR="$value" ;;
      esac ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
for v in NAME ZONE TYPE CONFIG WORKDIR; do
  if [[ -z "${!v}" ]]; then echo "missing --${v,,}" >&2; exit 2; fi
done
if [[ "$WORKDIR" != gs://* ]]; then
  echo "--workdir must be a gs:// path: all TPU hosts write one checkpoint there" >&2
  exit 2
fi
# The image each generation needs (see the header); an explicit --version wins.
if [[ -z "$VERSION" ]]; then
  case "$TYPE" in
    v5litepod-*) VERSION="v2-alpha-tpuv5-lite" ;;
    v5p-*) VERSION="v2-alpha-tpuv5" ;;
    v6e-*) VERSION="v2-alpha-tpuv6e" ;;
    v2-*|v3-*|v4-*) VERSION="tpu-ubuntu2204-base" ;;
    *) echo "no default --version for --type $TYPE: pass --version, the TPU software" \
         "version for it (cloud.google.com/tpu/docs/runtimes)" >&2; exit 2 ;;
  esac
fi
PROJECT_FLAG=()
if [[ -n "$PROJECT" ]]; then PROJECT_FLAG=(--project "$PROJECT"); fi

run() {
  printf '+'; printf ' %q' "$@"; printf '\n'  # shell-quoted: copy-pastable as printed
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}

# 1. Create the slice unless it exists (reuse keeps its installed environment).
# A listed slice is not necessarily usable: a preempted Spot/preemptible one
# stays listed as PREEMPTED (or TERMINATED) and runs nothing, and one still
# being created or repaired is not READY yet; scp and ssh fail on both. A dry
# run asks gcloud nothing and prints the commands for a new slice.
CREATE=(gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" "${PROJECT_FLAG[@]}"
  --accelerator-type "$TYPE" --version "$VERSION" $SPOT)
DELETE=(gcloud compute tpus tpu-vm delete "$NAME" --zone "$ZONE" "${PROJECT_FLAG[@]}" --quiet)
READY_TIMEOUT="${TPU_READY_TIMEOUT:-1800}"
POLL="${TPU_POLL_SECONDS:-30}"
if [[ ! "$READY_TIMEOUT" =~ ^[0-9]+$ ]]; then
  echo "TPU_READY_TIMEOUT=$READY_TIMEOUT is not a number of seconds" >&2; exit 2
fi
DESCRIBE_ERR="$(mktemp)"
trap 'rm -f "$DESCRIBE_ERR"' EXIT
# The slice's state; nothing when there is no such slice (gcloud says NOT_FOUND);
# status 1 when describe fails otherwise (network, auth: its message is in
# $DESCRIBE_ERR), which is not "no slice": creating one then would fail or clash.
slice_state() {
  if gcloud compute tpus tpu-vm describe "$NAME" --zone "$ZONE" "${PROJECT_FLAG[@]}" \
      --format='value(state)' 2>"$DESCRIBE_ERR"; then
    return 0
  fi
  grep -qiE 'NOT_FOUND|not found' "$DESCRIBE_ERR"
}
if [[ "$DRY_RUN" == 1 ]]; then
  run "${CREATE[@]}"
else
  DEADLINE=$((SECONDS + READY_TIMEOUT))
  if ! STATE="$(slice_state)"; then
    echo "tpu_pod.sh: cannot tell whether slice $NAME exists (gcloud compute tpus tpu-vm" \
      "describe failed: $(tail -n 1 "$DESCRIBE_ERR")); fix that and rerun" >&2
    exit 1
  fi
  while true; do
    STATE="${STATE//[[:space:]]/}"
    case "$STATE" in
      "") run "${CREATE[@]}"; break ;;  # create returns once the slice is READY
      READY) break ;;
      PREEMPTED|TERMINATED)
        if [[ -z "$SPOT" ]]; then
          DELETE_CMD="$(printf ' %q' "${DELETE[@]}")"
          echo "tpu_pod.sh: slice $NAME is $STATE and cannot run anything; delete it and" \
            "rerun this command to recreate it and resume (or rerun with --spot, which" \
            "does both): ${DELETE_CMD# }" >&2
          exit 1
        fi
        echo "# slice $NAME is $STATE: deleting and recreating it (--spot)" >&2
        run "${DELETE[@]}"
        run "${CREATE[@]}"
        break ;;
      # On their way to READY (DELETING: to gone, then it is created anew); a
      # describe that failed while waiting (a network blip) is asked again.
      CREATING|STARTING|RESTARTING|REIMAGING|REPAIRING|UNHIDING|DELETING|UNKNOWN_NOW) ;;
      *)
        echo "tpu_pod.sh: slice $NAME is in state $STATE, which this script does not" \
          "handle (READY is needed): see gcloud compute tpus tpu-vm describe $NAME" \
          "--zone $ZONE" >&2
        exit 1 ;;
    esac
    if ((SECONDS >= DEADLINE)); then
      echo "tpu_pod.sh: slice $NAME is still $STATE after ${READY_TIMEOUT}s" \
        "(TPU_READY_TIMEOUT); rerun this command later" >&2
      exit 1
    fi
    echo "# slice $NAME is $STATE: waiting for READY" >&2
    sleep "$POLL"
    if ! STATE="$(slice_state)"; then
      echo "# describe failed ($(tail -n 1 "$DESCRIBE_ERR")): asking again" >&2
      STATE=UNKNOWN_NOW
    fi
  done
fi

# 2. Copy the project (this checkout) to every worker and install it with TPU jax.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/ldattn_jax_src.XXXXXX")"  # one per run: no clash
# A dry run keeps it (a file list): the tar and scp commands it prints name it.
if [[ "$DRY_RUN" == 0 ]]; then trap 'rm -rf "$STAGE" "$DESCRIBE_ERR"' EXIT; fi
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
# pins) while the Ubuntu 22.04 images have 3.10: with their python3, pip fails on
# every worker. A .venv of an older Python (left by such a failed install) is
# remade. Extracted over the last run's files, a file deleted from the checkout
# would linger and be imported: .shipped lists what the last run shipped, and
# what this archive lacks of it is removed. Only those: the directory may hold
# what users keep there (shards, outputs) and the venv. (A worker installed before
# .shipped existed has no list: its stale files, if any, stay.)
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
mkdir -p ~/ldattn_jax && cd ~/ldattn_jax
tar -tzf ~/ldattn_jax_src.tar.gz > .shipped.new
# An empty list would remove every file the last run shipped.
if [ ! -s .shipped.new ]; then echo "ldattn_jax: the code archive lists no files" >&2; exit 1; fi
if [ -f .shipped ]; then
  grep -F -x -v -f .shipped.new .shipped | while IFS= read -r f; do
    case "$f" in */) ;; *) rm -f -- "$f" || true ;; esac
  done
fi
tar -xzf ~/ldattn_jax_src.tar.gz && mv .shipped.new .shipped
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

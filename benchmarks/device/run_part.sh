#!/usr/bin/env bash
# Run THERE (the device tool's GPU machine), from the repository root:
#   bash benchmarks/device/run_part.sh PART [BUDGET_S]
# A lent GPU comes with 15 minutes of device time per task, start-up and idle
# time included, so the kit is two calls, back to back (README.md beside this):
#   gpu    train bf16 398/224 lda_st and xception at batch 128, timm's
#          legacy_xception beside them in the same process, then batch 32,
#          then the other variants, the stencil forms and eval (goals 1, 2, 3)
#   host   predict in bf16 with 8/16/1 extraction threads, loader 0..8 grain
#          workers, predict in fp32 (goals 5, 4; needs both shape-predictor
#          halves: the gpu call carries one, this call the other)
# and, only where a session has device time left:
#   extra  a real training run (img/s, input wait), largest bf16 batch that
#          fits, fp32 steps, each conv/pool op alone
#   trace  jax.profiler trace of lda_st bf16 batch 128 (tgz in $OUT)
# Each part runs benchmarks/device/plan.py: steps in order of importance, one
# process, skipped (and listed) once the budget would not hold the next one,
# the JSON rewritten after every step. Results go to $OUT:
# <gpu>_<date>_<PART>.json and <PART>.log. SMOKE=1 shrinks every step (demo
# geometry, batch 2) to check this script on a CPU machine.
#
# BUDGET_S counts from this script's start: the set-up below (wheels, import
# checks, the predictor's unpacking, plan.py's imports and warm-up) comes out
# of it, since the device tool's timeout_s counts it too. The plan admits no
# step after the deadline (start + BUDGET_S); the hard stop is $margin s past
# it, for a step that overruns its guess, and the call's timeout_s must be at
# least BUDGET_S + $margin + a few seconds (README.md's call table; a test).
set -uo pipefail
start=$(date +%s)
part=${1:?usage: run_part.sh gpu|host|extra|trace [BUDGET_S]}
budget=${2:-}
margin=20
# Defaults: the call's timeout_s (420, 230) less the margin and 10 s to spare.
case $part in
    gpu) budget=${budget:-390} ;;
    host) budget=${budget:-200} ;;
    *) budget=${budget:-500} ;;
esac
deadline=$((start + ${budget%.*}))
OUT=${OUT:-/tmp/ldattn_out}
mkdir -p "$OUT"
# Wheels of what the image lacks, once per warm machine.
if [ ! -e /tmp/site/.ok ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    touch /tmp/site/.ok
fi
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
# Our pinned flax/optax/orbax on the image's (newer) jax. If they do not import
# together: the carried compat flax (wheels_compat.txt; flax 0.12.8 fails on
# jax 0.11.2), then the image's own three. The log says which, and the check
# that passes prints the versions (no JAX start of its own: every JSON's
# machine block records the devices).
check='import ldattn_jax.train, jax, flax, optax, orbax.checkpoint as o
print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, "orbax", o.__version__)'
if ! python3 -c "$check" 2>/tmp/ldattn_import.err; then
    echo "pinned flax does not import with this jax; trying the carried compat flax:"
    tail -1 /tmp/ldattn_import.err
    rm -rf /tmp/site/flax /tmp/site/flax-*
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/compat/flax-*.whl
    if ! python3 -c "$check" 2>/tmp/ldattn_import.err; then
        echo "nor the compat flax; using the image's flax/optax/orbax:"
        tail -1 /tmp/ldattn_import.err
        rm -rf /tmp/site/flax /tmp/site/flax-* /tmp/site/optax /tmp/site/optax-* \
            /tmp/site/orbax /tmp/site/orbax_checkpoint-*
        python3 -c "$check" || exit 1
    fi
fi

# XLA's persistent cache: a rerun on the same warm machine (or trace after
# gpu) loads compiles instead of repeating them (compile_s is then a load).
export JAX_COMPILATION_CACHE_DIR=/root/ldattn_xla_cache
# The halves of the shape predictor (prepare.sh) arrive one per call: keep them
# beside the machine's copy of the repo, which lives while the machine is warm.
mkdir -p /root/ldattn_devcache
cp -n .devcache/sp68.* /root/ldattn_devcache/ 2>/dev/null
models=/tmp/site/face_recognition_models
if [ ! -s $models/models/shape_predictor_68_face_landmarks.dat ] \
        && [ -s /root/ldattn_devcache/sp68.xz.parta ] && [ -s /root/ldattn_devcache/sp68.xz.partb ]; then
    # face_recognition_models' wheel (100 MB) cannot travel; this two-line
    # package answers the one call data_prep.faces makes of it.
    mkdir -p $models/models
    cat /root/ldattn_devcache/sp68.xz.part? | xz -dc > $models/models/shape_predictor_68_face_landmarks.dat
    echo "$(cat /root/ldattn_devcache/sp68.sha256)  $models/models/shape_predictor_68_face_landmarks.dat" \
        | sha256sum -c - || exit 1
    printf '%s\n' 'import os' '' 'def pose_predictor_model_location():' \
        '    return os.path.join(os.path.dirname(__file__), "models", "shape_predictor_68_face_landmarks.dat")' \
        > $models/__init__.py
fi
if [ "$part" = host ] && [ ! -s $models/models/shape_predictor_68_face_landmarks.dat ]; then
    echo "host: dlib's shape predictor is not assembled here: carry .devcache/sp68.xz.parta in one" \
         "call and .devcache/sp68.xz.partb in the next, on the same warm machine" \
         "(benchmarks/device/README.md), then run host again" | tee "$OUT/host.log"
    exit 3
fi
smoke=()
[ "${SMOKE:-0}" = 1 ] && smoke=(--smoke)
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' _)
tag=${gpu:-cpu}_$(date +%F)_$part
# Seconds left before the hard stop (at least 1: timeout 0 would mean none).
until_stop() { local s=$((deadline + $1 - $(date +%s))); echo $((s < 1 ? 1 : s)); }
{
    nvidia-smi 2>/dev/null | head -15
    echo "set-up took $(($(date +%s) - start)) s of the $budget s budget"
    case $part in
        gpu|host|extra)
            # The plan stops admitting steps at the deadline itself; the hard
            # stop, $margin s past it, only ends a step that overran its guess
            # or hangs (the JSON holds every step before it).
            timeout -k 5 "$(until_stop $margin)" python3 benchmarks/device/plan.py "$part" \
                --deadline "$deadline" --started "$start" --json "$OUT/$tag.json" "${smoke[@]}" ;;
        trace)
            geo=(--geometry paper --repeats 5); b=128
            [ "${SMOKE:-0}" = 1 ] && { geo=(--geometry demo --repeats 1); b=2; }
            timeout -k 5 "$(until_stop 0)" python3 -m ldattn_jax.benchmark train "${geo[@]}" --dtypes bfloat16 \
                --batch-sizes $b --variants lda_st --trace /tmp/ldattn_trace --json "$OUT/$tag.json"
            tar -C /tmp -czf "$OUT/${tag}_trace.tgz" ldattn_trace ;;
        *) echo "unknown part $part"; exit 2 ;;
    esac
} 2>&1 | tee "$OUT/$part.log"

#!/usr/bin/env bash
# Run THERE (the device tool's GPU machine), from the repository root:
#   bash benchmarks/device/run_part.sh PART
# One PART per device-tool call, each sized to end inside the 10-minute limit
# of one call (the train/eval JSON is saved after every row, so a part cut
# short keeps what it measured). Results go to $OUT (the tool brings them
# back): <gpu>_<date>_<PART>.json and <PART>.log. Order of importance:
#   train_bf16    train step, 4 variants x batch 32,128, bf16       (goals 1, 3)
#   side_by_side  timm legacy_xception vs ours, same GPU, bf16      (goal 2)
#                 + eval (inference) bf16 batch 128
#   host          loader 0..8 grain workers; predict with 1/8/16     (goals 4, 5)
#                 extraction threads (needs both shape-predictor halves:
#                 the calls of the first two parts carry one each)
#   stencils      LDATTN_STENCILS=on: xception + lda_st bf16 with the convs and
#                 pools in stencil/matmul form (4.5x faster on CPU), and each
#                 op alone (benchmarks/xception_ops.py): decides the GPU default
#   fp32          train fp32 batch 32,128 + bf16 at the largest power-of-two
#                 batch that fits (XLA memory analysis, `--batch-sizes max`)
#   trace         jax.profiler trace of lda_st bf16 batch 128 (tar in $OUT)
# SMOKE=1 shrinks every part (demo geometry, batch 2) to check this script on
# a CPU machine: benchmarks/device/README.md.
set -uo pipefail
part=${1:?usage: run_part.sh train_bf16|side_by_side|host|stencils|fp32|trace}
OUT=${OUT:-/tmp/ldattn_out}
mkdir -p "$OUT"
# Wheels of what the image lacks, once per warm machine.
if [ ! -e /tmp/site/.ok ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    touch /tmp/site/.ok
fi
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
# Our pinned flax/optax/orbax on the image's (newer) jax: if they do not import
# together, fall back to the image's own three and say so in the log.
if ! python3 -c 'import ldattn_jax.train' 2>/tmp/ldattn_import.err; then
    echo "pinned flax/optax/orbax do not import with this jax; using the image's:"
    tail -3 /tmp/ldattn_import.err
    rm -rf /tmp/site/flax /tmp/site/flax-* /tmp/site/optax /tmp/site/optax-* \
        /tmp/site/orbax /tmp/site/orbax_checkpoint-*
    python3 -c 'import ldattn_jax.train' || exit 1
fi
# XLA's persistent cache: side_by_side and trace reuse train_bf16's compiles
# (their compile_s is then a cache load; train_bf16's and fp32's are real
# unless a part is rerun on the same warm machine).
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
allow=()
if [ "$part" = host ] && [ ! -s $models/models/shape_predictor_68_face_landmarks.dat ]; then
    echo "host: dlib's shape predictor is not assembled here: carry .devcache/sp68.xz.parta in one" \
         "call and .devcache/sp68.xz.partb in the next, on the same warm machine" \
         "(benchmarks/device/README.md), then run host again" | tee "$OUT/host.log"
    exit 3
fi
if [ "${SMOKE:-0}" = 1 ]; then
    allow=(--allow-cpu)
    geo=(--geometry demo --repeats 1); b=2; b2=2; b3=4; side=(--size 62 --batch-sizes 2 --repeats 1 --warmup 1)
    predict=(--geometry demo --repeats 1 --threads 1,2); loader=(--max-workers 1)
    ops=(--size 62 --batch 2 --repeats 1)
else
    geo=(--geometry paper --repeats 5); b=32,128; b2=128; b3=max; side=(--batch-sizes 32,128)
    predict=(--geometry paper --repeats 3 --threads 1,8,16); loader=(--max-workers 8)
    ops=(--batch 32)
fi
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' _)
tag=${gpu:-cpu}_$(date +%F)_$part
bench=(timeout 560 python3 -m ldattn_jax.benchmark)
{
    nvidia-smi 2>/dev/null | head -15
    python3 -c 'import jax, flax, optax, orbax.checkpoint as o; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, "orbax", o.__version__, jax.devices())'
    case $part in
        train_bf16) "${bench[@]}" train "${geo[@]}" --dtypes bfloat16 --batch-sizes $b --json "$OUT/$tag.json" ;;
        side_by_side)
            timeout 420 python3 benchmarks/torch_vs_jax.py "${side[@]}" "${allow[@]}" --json "$OUT/${tag}_timm.json"
            timeout 150 python3 -m ldattn_jax.benchmark eval "${geo[@]}" --dtypes bfloat16 --batch-sizes $b2 --json "$OUT/${tag}_eval.json" ;;
        host)
            timeout 300 python3 -m ldattn_jax.benchmark loader "${loader[@]}" --json "$OUT/${tag}_loader.json"
            timeout 250 python3 -m ldattn_jax.benchmark predict "${predict[@]}" --json "$OUT/${tag}_predict.json" ;;
        stencils)
            LDATTN_STENCILS=on timeout 420 python3 -m ldattn_jax.benchmark train "${geo[@]}" --dtypes bfloat16 --batch-sizes $b --variants xception,lda_st --json "$OUT/$tag.json"
            timeout 120 python3 benchmarks/xception_ops.py "${ops[@]}" --dtype bfloat16 --json "$OUT/${tag}_ops.json" ;;
        fp32)
            # Largest batch first: each probe is one compile (XLA's memory analysis).
            timeout 280 python3 -m ldattn_jax.benchmark train "${geo[@]}" --dtypes bfloat16 --batch-sizes $b3 --max-start 128 --variants xception,lda_st --json "$OUT/${tag}_largest.json"
            timeout 290 python3 -m ldattn_jax.benchmark train "${geo[@]}" --dtypes float32 --batch-sizes $b --variants xception,lda_st,lda_spatial,lda_temporal --json "$OUT/$tag.json" ;;
        trace)
            "${bench[@]}" train "${geo[@]}" --dtypes bfloat16 --batch-sizes $b2 --variants lda_st --trace /tmp/ldattn_trace --json "$OUT/$tag.json"
            tar -C /tmp -czf "$OUT/${tag}_trace.tgz" ldattn_trace ;;
        *) echo "unknown part $part"; exit 2 ;;
    esac
} 2>&1 | tee "$OUT/$part.log"

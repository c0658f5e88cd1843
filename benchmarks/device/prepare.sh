#!/usr/bin/env bash
# Run HERE (the development machine, after `make setup`), once, before the GPU
# benchmark calls of the device tool. Fills two git-ignored folders that the
# calls carry (the device machine reaches no network):
#   .whl/      cp312 wheels of what the GPU image lacks (wheels.txt), ~17 MB,
#              and in .whl/compat/ a flax for a newer image jax (wheels_compat.txt)
#   .devcache/ dlib's 68-landmark shape predictor, xz'd and cut in two halves
#              (~32 MB each): the 100 MB file does not fit one call's 64 MiB,
#              so the gpu and host calls carry one half each (run_part.sh);
#              and predict's 10-s 1080p H.264 clip (the host call carries it).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
grep -qx '/.devcache/' .git/info/exclude 2>/dev/null || echo /.devcache/ >> .git/info/exclude
mkdir -p .whl .devcache
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
grep -v '^#' benchmarks/device/wheels.txt | grep -v '^promise' | grep . > .whl/want.txt
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${plat[@]}" -d .whl -r .whl/want.txt
python3 -m pip wheel -q --no-deps -w .whl "$(grep '^promise' benchmarks/device/wheels.txt)"
# A flax for a newer image jax than our pin (wheels_compat.txt; run_part.sh).
mkdir -p .whl/compat
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${plat[@]}" -d .whl/compat \
    $(grep -v '^#' benchmarks/device/wheels_compat.txt | grep .)
rm .whl/want.txt
if [ ! -s .devcache/sp68.xz.partb ]; then
    dat=$("$PY" -c 'import face_recognition_models as m; print(m.pose_predictor_model_location())')
    xz -9e -T0 -c "$dat" > .devcache/sp68.xz      # ~2 min; 99.7 MB -> 63.4 MB
    sha256sum "$dat" | cut -d' ' -f1 > .devcache/sp68.sha256
    split -n 2 -a 1 .devcache/sp68.xz .devcache/sp68.xz.part
    rm .devcache/sp68.xz
fi
# predict's clip as the datasets are encoded (H.264, CRF 23): the device has no
# PyAV to write it and OpenCV's wheel no H.264 encoder. ~2.4 MB, ~15 s.
clip=.devcache/clip_1080p_10s_h264.mp4
# Clips written before session 11 cut frames into slices (PyAV's default);
# x264's settings in the stream say so. Remake them with one slice per frame.
if [ -s $clip ] && grep -aq 'sliced_threads=1' $clip; then rm $clip; fi
[ -s $clip ] || "$PY" -c "from ldattn_jax.benchmark import write_test_video as w; w('$clip', codec='h264')"
du -sh .whl .devcache/sp68.xz.part* $clip

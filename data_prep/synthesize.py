"""Synthetic forgeries in FF++ layout: the embedded demo and test data.

    python -m data_prep.synthesize --out DIR --videos N [--seed S] [--frames 32] [--codec mjpeg]
        [--workers N]

N "real" videos (N even, >= 6) of a face with smooth head motion, lighting
drift and sensor noise, and for each of four manipulation methods one fake per
real video, written as

    DIR/original_sequences/youtube/c23/videos/NNN.mp4
    DIR/manipulated_sequences/<Method>/c23/videos/TTT_SSS.mp4 (+ TTT_SSS.masks.npz)
    DIR/splits/{train,val,test}.json           (FF++ format: [target, source] pairs)

so `python -m data_prep.build --dataset synthetic --root DIR` reads it with the
FF++ reader. Each method stands for one defect class of paper Sec. III:

  Upsampling         local texture: the inner face is rebuilt from a 5x smaller
                     copy (nearest up-sampling) with a checkerboard overlay, the
                     trace of transposed-convolution up-sampling.
  MismatchedColor    mismatched details: one eye is recoloured and the skin of
                     the inner face shifted in colour, pasted with a sharp seam.
  AbnormalStructure  abnormal structure: the mouth (or one eye) is warped.
  TemporalJitter     temporal only: every frame is a clean blend of the face
                     displaced by a random sub-pixel-to-3-px offset, drawn anew
                     per frame. Real videos go through the same blend with one
                     constant offset per video, so no single frame differs in
                     kind from a real one; only the residuals I^{t+1} - I^t do.

A fake TTT_SSS is made from real video TTT (same motion, light and noise; only
the manipulation differs); SSS just names the pair as in FF++. Masks
([T, H, W] uint8 in {0, 1}: the pixels the method changed in each frame) sit
beside each fake as <video>.masks.npz.

Faces come from photos shipped inside installed packages: skimage's
astronaut() and matplotlib's grace_hopper.jpg. Identities are augmentations of
these two (colour, size, flip, shear, background texture) -- two people, many
looks; pairs, and so splits, always hold one of each photo. Deterministic by
seed (same seed -> same frames, masks and splits).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import os
import sys

import cv2
import numpy as np

from data_prep import cli
from data_prep.readers import MASK_SUFFIX, SYNTHETIC_METHODS

FRAME = 256  # frame side: a ~100 px face, which dlib's HOG finds without upsampling
FPS = 25
# mjpeg (default): lossy but intra-only, so how a frame is coded depends on that
# frame alone. mp4v's inter-frame coding sharpens TemporalJitter fakes by ~4 %
# (a per-frame cue the method must not have); ffv1 is lossless but 7x larger.
CODECS = {"mjpeg": "MJPG", "mp4v": "mp4v", "ffv1": "FFV1"}


# ------------------------------------------------------------------ faces


def _photos() -> list[np.ndarray]:
    import matplotlib.cbook
    import skimage.data

    hopper = cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return [skimage.data.astronaut(), cv2.cvtColor(hopper, cv2.COLOR_BGR2RGB)]


def _face_templates() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per photo: (RGB photo, dlib face box [l, t, r, b], 68 landmarks)."""
    from data_prep.faces import detect_face

    out = []
    for photo in _photos():
        found = detect_face(photo)
        if found is None:  # a packaged photo that stopped showing a face: fail loudly
            raise RuntimeError("dlib finds no face in a packaged photo; cannot synthesize")
        out.append((photo, *found))
    return out


def _backgrounds() -> list[np.ndarray]:
    import skimage.data

    gray = [skimage.data.brick(), skimage.data.gravel(), skimage.data.grass()]
    color = [skimage.data.coffee(), skimage.data.rocket()]
    imgs = [np.dstack([g] * 3) for g in gray] + color
    return [cv2.resize(i, (2 * FRAME, 2 * FRAME), interpolation=cv2.INTER_AREA) for i in imgs]


class Identity:
    """One synthetic person: a face sprite with alpha and landmarks, and a background."""

    def __init__(self, rng: np.random.Generator, template, backgrounds):
        photo, box, lms = template
        photo = photo.astype(np.float32)
        w = box[2] - box[0]
        face = rng.uniform(92, 112)  # face box side in the frame
        s = face / w
        if rng.random() < 0.5:  # flip
            photo = photo[:, ::-1]
            box = np.array([photo.shape[1] - box[2], box[1], photo.shape[1] - box[0], box[3]])
            lms = lms.copy()
            lms[:, 0] = photo.shape[1] - 1 - lms[:, 0]
            lms = lms[_FLIP_68]
        shear = rng.uniform(-0.06, 0.06)
        # Photo -> sprite: scale to the face size, shear a little, face centre at the origin.
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        self.affine = np.array(
            [[s, shear * s, -s * (cx + shear * cy)], [0, s, -s * cy]], np.float64
        )
        self.photo = photo
        # Colour: per-channel gain and a hue-ish rotation of chroma.
        self.gain = rng.uniform(0.85, 1.15, 3).astype(np.float32)
        self.face = face
        self.landmarks = _apply(self.affine, lms)  # sprite coordinates (face centre = 0)
        bg = backgrounds[rng.integers(len(backgrounds))].astype(np.float32)
        y, x = rng.integers(0, FRAME, 2)
        self.background = bg[y : y + FRAME, x : x + FRAME] * rng.uniform(0.6, 1.1, 3).astype(
            np.float32
        )


# dlib 68-point index permutation under a horizontal flip.
_FLIP_68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1))
    + list(range(27, 31)) + list(range(35, 30, -1))
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)  # fmt: skip


def _apply(affine: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ affine[:, :2].T + affine[:, 2]


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a after b, for 2x3 affines."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


def _hull_mask(pts: np.ndarray, dilate: int = 0, blur: float = 0.0) -> np.ndarray:
    m = np.zeros((FRAME, FRAME), np.float32)
    cv2.fillConvexPoly(m, cv2.convexHull(np.round(pts).astype(np.int32)), 1.0)
    if dilate:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
        m = cv2.dilate(m, k)
    if blur:
        m = cv2.GaussianBlur(m, (0, 0), blur)
    return m


def _shift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(
        img, m, (FRAME, FRAME), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


# ------------------------------------------------------------------ video of one person


def render_base(ident: Identity, rng: np.random.Generator, frames: int):
    """Clean frames (float32 RGB, smooth head motion, lighting drift) and their landmarks."""
    t = np.arange(frames) / FPS
    freq = rng.uniform(0.2, 0.6, 4)
    phase = rng.uniform(0, 2 * np.pi, 4)
    amp = np.array([10, 6, 3, 0.03]) * rng.uniform(0.5, 1.0, 4)  # px, px, degrees, scale
    centre = np.array([FRAME / 2, FRAME / 2 + 8]) + rng.uniform(-10, 10, 2)
    light = 1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 2 * np.pi))
    out, lms = [], []
    for i in range(frames):
        dx, dy, rot, sc = amp * np.sin(2 * np.pi * freq * t[i] + phase)
        pose = cv2.getRotationMatrix2D((0, 0), rot, 1 + sc)
        pose[:, 2] += centre + (dx, dy)
        full = _compose(pose, ident.affine)  # photo -> frame
        face = cv2.warpAffine(
            ident.photo, full, (FRAME, FRAME), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        frame_lms = _apply(pose, ident.landmarks)
        # Head = an ellipse around the landmarks, feathered into the background.
        alpha = np.zeros((FRAME, FRAME), np.float32)
        c = frame_lms.mean(0)
        axes = (int(ident.face * 0.95 * (1 + sc)), int(ident.face * 1.3 * (1 + sc)))
        cv2.ellipse(alpha, (int(c[0]), int(c[1] - ident.face * 0.15)), axes, rot, 0, 360, 1.0, -1)
        alpha = cv2.GaussianBlur(alpha, (0, 0), 6)[..., None]
        img = (face * ident.gain * alpha + ident.background * (1 - alpha)) * light[i]
        out.append(img)
        lms.append(frame_lms)
    return out, lms


def _inner_face(lms: np.ndarray) -> np.ndarray:
    return lms[17:68]  # brows, nose, eyes, mouth


def upsampling(frames, lms, rng):
    factor = 5
    offset = rng.integers(0, factor, 2)
    yy, xx = np.mgrid[0:FRAME, 0:FRAME]
    checker = np.where(
        ((xx + offset[0]) // factor + (yy + offset[1]) // factor) % 2 == 0, 1.0, -1.0
    )
    checker = (rng.uniform(6, 10) * checker).astype(np.float32)[..., None]
    out, masks = [], []
    for f, lm in zip(frames, lms, strict=True):
        m = _hull_mask(_inner_face(lm), dilate=4)
        small = cv2.resize(f, (FRAME // factor, FRAME // factor), interpolation=cv2.INTER_AREA)
        up = cv2.resize(small, (FRAME, FRAME), interpolation=cv2.INTER_NEAREST) + checker
        soft = cv2.GaussianBlur(m, (0, 0), 1.5)[..., None]
        out.append(f * (1 - soft) + up * soft)
        masks.append(m > 0.5)
    return out, masks


def mismatched_color(frames, lms, rng):
    eye = rng.integers(2)
    eye_idx = slice(36, 42) if eye == 0 else slice(42, 48)
    tint = np.float32([1.6, 0.6, 0.6]) if rng.random() < 0.5 else np.float32([0.6, 0.8, 1.6])
    skin = np.float32([1, 1, 1]) + rng.uniform(-0.18, 0.18, 3).astype(np.float32)
    out, masks = [], []
    for f, lm in zip(frames, lms, strict=True):
        face = _hull_mask(_inner_face(lm), dilate=3, blur=0.7)[..., None]  # sharp seam
        e = _hull_mask(lm[eye_idx], dilate=4, blur=1.0)[..., None]
        g = f * (1 - face) + f * skin * face
        g = g * (1 - e) + g * tint * e
        out.append(g)
        masks.append(np.maximum(face[..., 0], e[..., 0]) > 0.5)
    return out, masks


def abnormal_structure(frames, lms, rng):
    part = (
        slice(48, 68)
        if rng.random() < 0.6
        else (slice(36, 42) if rng.random() < 0.5 else slice(42, 48))
    )
    strength = rng.uniform(0.8, 1.1) * (1 if rng.random() < 0.5 else -1)
    yy, xx = np.mgrid[0:FRAME, 0:FRAME].astype(np.float32)
    out, masks = [], []
    for f, lm in zip(frames, lms, strict=True):
        pts = lm[part]
        c = pts.mean(0)
        r = 1.3 * np.ptp(pts[:, 0]) / 2 + 4
        dx, dy = xx - c[0], yy - c[1]
        d = np.sqrt(dx**2 + dy**2) / r
        w = np.clip(1 - d, 0, 1) ** 2
        # Twist + vertical squash: features bend, as a badly generated mouth/eye would.
        ang = strength * w * np.pi / 2
        cos, sin = np.cos(ang), np.sin(ang)
        sx = c[0] + cos * dx - sin * dy
        sy = c[1] + sin * dx + cos * dy * (1 + 0.4 * w)
        g = cv2.remap(
            f,
            sx.astype(np.float32),
            sy.astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )
        out.append(g)
        masks.append(np.hypot(sx - xx, sy - yy) > 0.5)
    return out, masks


def _offset(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-3, 3, 2)


def blend_masks(lms) -> list[np.ndarray]:
    """Soft inner-face region of the blend step, per frame ([H, W, 1] float32)."""
    return [_hull_mask(_inner_face(lm), dilate=6, blur=3.0)[..., None] for lm in lms]


def blend_face(frames, soft_masks, offsets):
    """The face-swap step: the inner face pasted back displaced by offsets[t] (soft seam)."""
    out, masks = [], []
    for f, m, (dx, dy) in zip(frames, soft_masks, offsets, strict=True):
        out.append(f + (_shift(f, dx, dy) - f) * m)
        masks.append(m[..., 0] > 0.05)
    return out, masks


MANIPULATIONS = {
    "Upsampling": upsampling,
    "MismatchedColor": mismatched_color,
    "AbnormalStructure": abnormal_structure,
}
assert set(MANIPULATIONS) | {"TemporalJitter"} == set(SYNTHETIC_METHODS)


def _finish(frames, noise):
    return [np.clip(f + n, 0, 255).astype(np.uint8) for f, n in zip(frames, noise, strict=True)]


@contextlib.contextmanager
def _quiet_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def write_video(path: str, frames: list[np.ndarray], codec: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with _quiet_stderr():
        # For MJPEG in .mp4 OpenCV prints (C stdio, not its logger) that it stores
        # the stream under the 'mp4v' tag: expected, and 120 lines of noise.
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*CODECS[codec]), FPS, (FRAME, FRAME))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {codec} to {path}")
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def synthesize_person(
    root: str, vid: int, partner: int, seed: int, frames: int, codec: str, templates, backgrounds
) -> None:
    """Real video `vid` and its four fakes `vid_partner`."""
    rng = np.random.default_rng([seed, vid])
    ident = Identity(rng, templates[vid % len(templates)], backgrounds)
    base, lms = render_base(ident, rng, frames)
    noise = [rng.normal(0, 2.0, (FRAME, FRAME, 3)).astype(np.float32) for _ in range(frames)]
    still = [_offset(rng)] * frames  # the real video's constant blend offset
    soft = blend_masks(lms)  # the same for the real video and its fakes
    real, _ = blend_face(base, soft, still)
    write_video(_real_path(root, vid), _finish(real, noise), codec)
    for method in SYNTHETIC_METHODS:
        mrng = np.random.default_rng([seed, vid, SYNTHETIC_METHODS.index(method) + 1])
        if method == "TemporalJitter":
            fake, masks = blend_face(base, soft, [_offset(mrng) for _ in range(frames)])
        else:
            fake, masks = MANIPULATIONS[method](base, lms, mrng)
            fake, _ = blend_face(fake, soft, still)
        path = _fake_path(root, method, vid, partner)
        write_video(path, _finish(fake, noise), codec)
        np.savez_compressed(
            os.path.splitext(path)[0] + MASK_SUFFIX, masks=np.stack(masks).astype(np.uint8)
        )


def _real_path(root, vid):
    return os.path.join(root, "original_sequences", "youtube", "c23", "videos", f"{vid:03d}.mp4")


def _fake_path(root, method, vid, partner):
    return os.path.join(
        root, "manipulated_sequences", method, "c23", "videos", f"{vid:03d}_{partner:03d}.mp4"
    )


def split_pairs(num_videos: int, seed: int) -> dict[str, list[list[str]]]:
    """FF++-style pairs (2k, 2k+1) -> train/val/test (~70/15/15 %, val and test non-empty)."""
    pairs = [[f"{2 * k:03d}", f"{2 * k + 1:03d}"] for k in range(num_videos // 2)]
    order = np.random.default_rng([seed, 999]).permutation(len(pairs))
    n_eval = max(1, round(0.15 * len(pairs)))
    test = [pairs[i] for i in sorted(order[:n_eval])]
    val = [pairs[i] for i in sorted(order[n_eval : 2 * n_eval])]
    train = [pairs[i] for i in sorted(order[2 * n_eval :])]
    return {"train": train, "val": val, "test": test}


def synthesize(
    out: str, videos: int, seed: int = 0, frames: int = 32, codec: str = "mjpeg", workers: int = 1
) -> dict:
    """Writes the whole set; returns the split pairs.

    Every person is seeded on its own ([seed, id]), so `workers` processes give
    the same bytes as one.
    """
    if videos < 6 or videos % 2:
        raise ValueError(
            f"--videos {videos}: need an even number >= 6 (pairs for train, val, test)"
        )
    if frames < 8:
        raise ValueError(f"--frames {frames}: need >= 8")
    if codec not in CODECS:
        raise ValueError(f"--codec {codec!r}: choose one of {sorted(CODECS)}")
    cv2.setNumThreads(1)
    templates = _face_templates()
    backgrounds = _backgrounds()
    splits = split_pairs(videos, seed)
    jobs = [(v, v ^ 1) for v in range(videos)]  # partner of 2k is 2k+1 and back
    args = (seed, frames, codec, templates, backgrounds)
    if workers <= 1:
        for vid, partner in jobs:
            synthesize_person(out, vid, partner, *args)
    else:
        ctx = multiprocessing.get_context("forkserver")
        with cf.ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=cv2.setNumThreads, initargs=(1,)
        ) as pool:
            for f in [
                pool.submit(synthesize_person, out, vid, partner, *args) for vid, partner in jobs
            ]:
                f.result()
    os.makedirs(os.path.join(out, "splits"), exist_ok=True)
    for name, pairs in splits.items():
        with open(os.path.join(out, "splits", f"{name}.json"), "w") as f:
            json.dump(pairs, f)
    return splits


def main(argv=None) -> int:
    p = cli.ArgumentParser(
        prog="python -m data_prep.synthesize", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", required=True)
    p.add_argument(
        "--videos", type=int, default=24, help="real videos (even, >= 6); 5x as many files"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=32, help="frames per video")
    p.add_argument("--codec", default="mjpeg", choices=sorted(CODECS))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    a = p.parse_args(argv)
    try:
        splits = synthesize(a.out, a.videos, a.seed, a.frames, a.codec, a.workers)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = {k: len(v) for k, v in splits.items()}
    print(f"wrote {a.videos} real + {4 * a.videos} fake videos to {a.out} (pairs per split {n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

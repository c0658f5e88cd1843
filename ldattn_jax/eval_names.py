"""How evaluate names its output directories, for the tools that find them again.

WORKDIR/eval/<dataset>_<split>_<step>[_data<sha8>][_<dtype>][_t<threshold>]/:
``_data`` marks shards other than the run's own (``--data``), with the first 8
hex digits of their fingerprint; ``_<dtype>`` a compute dtype other than the
trained one; ``_t`` a decision threshold other than 0.5. `thresholds` looks
for the run's own val result, `report` for what a run trained on.
"""

from __future__ import annotations

import hashlib
import re

_OTHER_DATA = re.compile(r"_data[0-9a-f]{8}(_|$)")


def run_name(
    dataset: str,
    split: str,
    step: int,
    *,
    other_data_sha256: str | None = None,
    dtype: str | None = None,
    threshold: float | None = None,
) -> str:
    """The directory name; each optional part only where it differs from the run's own."""
    name = f"{safe(dataset)}_{split}_{step}"
    if other_data_sha256:
        name += f"_data{other_data_sha256[:8]}"
    if dtype:
        name += f"_{dtype}"
    if threshold is not None:
        name += f"_t{threshold_text(threshold)}"
    return name


def threshold_text(threshold: float) -> str:
    """The shortest text that reads back as the same float. A rounded one
    (0.451463 for 0.45146312) would name two thresholds' results alike and,
    copied into --threshold, apply another threshold than the one printed."""
    return repr(float(threshold))


def score_text(score: float, threshold: float | None = None, decimals: int = 4) -> str:
    """A score to `decimals` places, or more where that many would read as on the
    other side of `threshold` than the score is (or on it): a threshold near 1
    (a confident model's val EER) printed 0.999997 beside a score shown as
    1.0000 and called real. The verdict is score > threshold."""
    score = float(score)
    text = f"{score:.{decimals}f}"
    if threshold is None:
        return text
    threshold = float(threshold)
    while decimals < 17 and (float(text) > threshold) != (score > threshold):
        decimals += 1
        text = f"{score:.{decimals}f}"
    return text if (float(text) > threshold) == (score > threshold) else repr(score)


def of_other_data(name: str) -> bool:
    """Whether the directory ``name`` holds results of shards other than the run's own."""
    return bool(_OTHER_DATA.search(name))


def safe(name: str) -> str:
    """``name`` as one path component: letters and digits of any script, '_', '.' and
    '-' are kept, runs of other characters become '_'.

    Unicode letters stay: keeping ASCII alone turned "видео.mp4" into ".mp4", a
    hidden file that every other name in that script would share. A leading
    '.' is dropped for the same reason. At most 80 bytes of UTF-8 (not 80
    characters: 80 CJK characters are 240 bytes, and a suffix on top of that
    would pass the file system's 255-byte limit on a name).
    """
    name = re.sub(r"[^\w.-]+", "_", name).strip("_").lstrip(".")
    return name.encode("utf-8", "surrogateescape")[:80].decode("utf-8", "ignore")


def figure_stem(name: str) -> str:
    """A figure's file-name stem for ``name`` (e.g. ``real_<method>_<video id>``):
    `safe` of it, for a reader, then '_' and the first 8 hex digits of the
    sha1 of the whole of ``name``. `safe` alone maps names that differ only in
    punctuation or spaces ("a b", "a_b") or past their first 80 bytes (long
    DFDC ids) to one file, and the later figure would overwrite the earlier;
    the hash keeps them apart, as predict's figure names do."""
    digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{safe(name)}_{digest}"

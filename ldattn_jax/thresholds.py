"""What the run's val split chose, read back for other splits: the decision
threshold of ACC and of predict's verdicts (``--threshold``), the calibration
map of predict's even-odds probability (``--calibration val``), and where each
came from.

``--threshold`` takes a probability, or ``val``: the video-level EER threshold
that ``evaluate --split val`` found for the *same* checkpoint step and compute
dtype of this run, read from its metrics.json under WORKDIR/eval/. Why a
lookup and not only a number to copy: ``--checkpoint best`` moves as training
goes on, and a threshold copied from an older checkpoint's val run would be
applied to a newer model without a word. The lookup refuses what does not
match (another step, dtype or shard build, or other weights at that step: a
workdir trained again) and says which command makes it.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import math
import os

from ldattn_jax import calibration, eval_names, provenance
from ldattn_jax import metrics as metrics_lib

VAL = "val"
# metrics.json's threshold_source: how the threshold was chosen. A val lookup
# records the metrics.json it read instead (relative to the workdir).
DEFAULT_SOURCE = metrics_lib.DEFAULT_SOURCE
GIVEN_SOURCE = metrics_lib.GIVEN_SOURCE


class ThresholdError(ValueError):
    """--threshold val cannot be resolved; the message says why and what to run."""


def parse_threshold(text: str) -> float | str:
    """``--threshold``'s value: a probability in [0, 1] or the word ``val``."""
    if text == VAL:
        return VAL
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a probability in [0, 1], or 'val' for the video-level EER "
            "threshold of this checkpoint's val evaluation"
        )
    return value


def add_threshold_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold",
        type=parse_threshold,
        default=None,  # None: the default, recorded as such; a given 0.5 is "given"
        help="call a video (frame) fake when its fake probability is above this (default "
        "0.5); 'val': the video-level EER threshold that evaluate --split val found for the "
        "same checkpoint and dtype (docs/evaluation.md)",
    )


def _candidate_dirs(config, workdir: str, recorded: list[dict] | None = None) -> list[str]:
    """Where the run's own shards may be, as real paths, most trusted first: the
    directories training recorded (`provenance.data_identity`), then
    config.data.dir as given (relative to this cwd) and relative to the
    workdir's parent (a run moved with its data, or trained from another cwd).
    ``recorded``: `provenance.training_data` of the workdir, where the caller read it."""
    if recorded is None:
        recorded = provenance.training_data(workdir)
    dirs = [d["dir"] for d in recorded if d.get("dir")]
    given = (config.get("data") or {}).get("dir") or None
    if given:
        given = os.path.expanduser(str(given))
        dirs.append(given)
        if not os.path.isabs(given):
            dirs.append(os.path.join(os.path.dirname(os.path.abspath(workdir)), given))
    found = []
    for d in dirs:
        real = os.path.realpath(d)
        if real not in found:
            found.append(real)
    return found


def run_data_dir(config, workdir: str) -> str | None:
    """The run's own shard directory where it is at hand (the first of
    `_candidate_dirs` that exists), else None."""
    return next((d for d in _candidate_dirs(config, workdir) if os.path.isdir(d)), None)


def is_run_data(data_dir: str, config, workdir: str, shards_sha256: str | None = None) -> bool:
    """Whether the build in ``data_dir`` is the run's own: its fingerprint is one
    a training session recorded (a copy or a symlink of the build counts), or it
    is where the run's shards lie (`_candidate_dirs`: also for runs trained
    before the fingerprint was recorded, and for shards rebuilt in place, whose
    val results `val_results` then refuses as stale). ``shards_sha256``: the
    build's fingerprint where the caller has it."""
    recorded = provenance.training_data(workdir)
    fingerprints = {
        (d["shards_sha256"], d.get("fingerprint_version"))
        for d in recorded
        if d.get("shards_sha256")
    }
    if fingerprints:
        sha = shards_sha256 or metrics_lib.shards_fingerprint(data_dir)
        # A line of an older version (face cache hashed too) is compared in its
        # own version; where that cannot tell, the paths below decide.
        if any(
            metrics_lib.fingerprint_matches(value, version, data_dir, sha)
            for value, version in sorted(fingerprints, key=str)
        ):
            return True
    return os.path.realpath(data_dir) in _candidate_dirs(config, workdir, recorded)


def val_results(
    workdir: str,
    step: int,
    compute_dtype: str,
    data_dir: str | None,
    val_split: str,
    *,
    flag: str,
    read,
) -> dict:
    """{metrics.json relative to ``workdir``: ``read(document)``} of the run's own
    ``val_split`` evaluated at checkpoint ``step`` in ``compute_dtype``; at least
    one, else FileNotFoundError naming the command that makes it. ``flag``
    (``--threshold val``) begins every message.

    ``data_dir``: the run's shards; where given and present, a val result of
    another build of them (rebuilt since) is refused as stale, and so is one
    of other weights at this step (its ``checkpoint.state_sha256`` is not that
    of the checkpoint now in the workdir: trained again since). A val result whose
    fingerprint is of an older version that cannot be compared (version 1 also
    hashed the face cache: `metrics.fingerprint_matches`) is trusted, as one
    from before ``state_sha256`` was recorded is. A file ``read``
    fails on (KeyError, ...: cut short, or of an older layout) is named in the
    refusal rather than skipped in silence.
    """
    rerun = rerun_command(workdir, val_split, step, compute_dtype)
    found: dict = {}
    stale = []
    retrained = []
    unreadable = []  # evaluate's metrics.json files cut short or of an older layout
    fingerprint = None
    if data_dir and os.path.isdir(data_dir):
        fingerprint = metrics_lib.shards_fingerprint(data_dir)
    weights = _Weights(workdir, step)
    for path in sorted(glob.glob(os.path.join(workdir, "eval", "*", "metrics.json"))):
        if eval_names.of_other_data(os.path.basename(os.path.dirname(path))):
            continue  # results of another build: their val is not the run's val
        try:
            with open(path) as f:
                doc = json.load(f)
            if (doc["split"], doc["checkpoint"]["step"], doc["compute_dtype"]) != (
                val_split,
                step,
                compute_dtype,
            ):
                continue
            value = read(doc)
            sha = doc["shards_sha256"]
            sha_version = doc.get("shards_fingerprint_version")  # absent: version 1
            # Written before state_sha256 was recorded: the weights cannot be told.
            state_sha = doc["checkpoint"].get("state_sha256")
        except (OSError, ValueError, KeyError, TypeError) as e:
            # Cut short, or written by an older version: it may be the val
            # result asked for, so a refusal names it rather than "none found".
            unreadable.append(f"{os.path.relpath(path, workdir)} ({type(e).__name__}: {e})")
            continue
        rel = os.path.relpath(path, workdir)
        same_build = (
            None
            if fingerprint is None
            else metrics_lib.fingerprint_matches(sha, sha_version, data_dir, fingerprint)
        )
        if same_build is None and fingerprint is not None and sha is not None:
            logging.warning(
                "%s: %s records a data fingerprint of an older version that cannot be "
                "compared with this build's (it also hashed the face cache); used as the "
                "run's own. If the shards were rebuilt since, run again: %s",
                flag,
                rel,
                rerun,
            )
        if same_build is False:
            stale.append(rel)
        elif state_sha is not None and weights.differ(state_sha):
            retrained.append(rel)
        else:
            found[rel] = value
    if not found:
        why = (
            f"the val results {stale} are of another build of {data_dir} (rebuilt since)"
            if stale
            else f"the val results {retrained} are of other weights at checkpoint step {step} "
            "(the workdir was trained again since)"
            if retrained
            else f"no {val_split} evaluation of checkpoint step {step} in {compute_dtype} under "
            f"{os.path.join(workdir, 'eval')}"
        )
        if unreadable:
            why += f" (unreadable, so not used: {'; '.join(unreadable[:3])})"
        raise FileNotFoundError(f"{flag}: {why}; run first: {rerun}")
    return found


class _Weights:
    """The checkpoint's state hash, read once and only when a val result records one."""

    def __init__(self, workdir: str, step: int):
        self.workdir, self.step, self._sha = workdir, step, False

    def differ(self, recorded: str) -> bool:
        if self._sha is False:
            from ldattn_jax.checkpointing import state_files_sha256

            try:
                self._sha = state_files_sha256(self.workdir, self.step)
            except FileNotFoundError:
                self._sha = None  # no checkpoint files here: nothing to compare
        return self._sha is not None and self._sha != recorded


def rerun_command(workdir: str, val_split: str, step: int, compute_dtype: str) -> str:
    """The evaluate command that writes the val result a lookup needs."""
    return (
        f"python -m ldattn_jax.evaluate --workdir {workdir} --split {val_split} "
        f"--checkpoint {step} --dtype {compute_dtype}"
    )


def val_value(
    workdir: str,
    step: int,
    compute_dtype: str,
    data_dir: str | None,
    val_split: str,
    *,
    flag: str,
    what: str,
    read,
    check,
    if_one_class: str = "",
):
    """(value, metrics.json relative to ``workdir``): ``read(document)`` of the
    run's val result (`val_results`), ``check``-ed (it returns the value to
    use or raises ValueError saying what is wrong), the same in every val result
    of that checkpoint to VAL_TOLERANCE (`_same_value`; the first by name is
    used: the one at the default threshold, where val was evaluated at several).
    Refused, naming the file and the command to rerun, when one is wrong, when
    they disagree, or when it is None (a one-class val split; ``if_one_class``
    says what to do then)."""
    found = val_results(workdir, step, compute_dtype, data_dir, val_split, flag=flag, read=read)
    rerun = rerun_command(workdir, val_split, step, compute_dtype)
    checked = {}
    for rel, value in found.items():
        if value is None:
            raise ThresholdError(
                f"{flag}: {rel} has no {what} (its val split lacks a class){if_one_class}"
            )
        try:
            checked[rel] = check(value)
        except ValueError as e:
            raise ThresholdError(
                f"{flag}: {os.path.join(workdir, rel)} {e}; remove that directory and run "
                f"again: {rerun}"
            ) from None
    first = min(checked)
    if not all(_same_value(checked[first], v) for v in checked.values()):
        raise ThresholdError(
            f"{flag}: val results {sorted(found)} disagree on the {what}; remove the stale "
            f"ones or run again: {rerun}"
        )
    return checked[first], first


# Two val results of one checkpoint agree when their numbers agree to this
# (relative or absolute) tolerance, not to the last bit: XLA picks its kernels
# by batch shape, so evaluations of the same weights at another --batch_size
# (an override the docs allow) give scores that differ by ~1e-7 (measured: up
# to 3.5e-7, on 196 of 240 frames), and the EER threshold and the Platt map
# fitted on them move in the 7th-8th digit (0.26812618405320376 vs
# 0.2681261992328737). Neither result is stale; a real difference (another
# build, other weights: refused above by fingerprint and state hash) is far
# larger. The first of them by name is used.
VAL_TOLERANCE = 1e-6


def _same_value(a, b) -> bool:
    """``a`` and ``b`` (numbers, or dicts/lists of them and of other JSON values)
    agree, numbers to VAL_TOLERANCE and the rest exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same_value, a, b))
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    if numbers:
        return math.isclose(a, b, rel_tol=VAL_TOLERANCE, abs_tol=VAL_TOLERANCE)
    return a == b


def _probability(value) -> float:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"gives video.eer_threshold = {value!r}, not a probability in [0, 1]")
    return float(value)


def val_eer_threshold(
    workdir: str,
    step: int,
    compute_dtype: str,
    data_dir: str | None = None,
    val_split: str = VAL,
) -> tuple[float, str]:
    """(video-level EER threshold, metrics.json relative to ``workdir``) of the
    run's own ``val_split`` at checkpoint ``step`` computed in ``compute_dtype``.

    ``data_dir``: the run's shards; where given and present, a val result of
    another build of them (rebuilt since) is refused as stale.
    """
    return val_value(
        workdir,
        step,
        compute_dtype,
        data_dir,
        val_split,
        flag="--threshold val",
        what="video-level EER threshold",
        read=lambda doc: doc["video"]["eer_threshold"],
        check=_probability,
        if_one_class="; pass --threshold P",
    )


def val_split_of(config, splits: tuple[str, ...], flag: str, instead: str = "") -> str:
    """The split training chose its checkpoints on (config.data.val_split), which
    ``flag`` reads from; refused when ``splits`` (what is being evaluated)
    contains it: a value chosen on the data it is measured on flatters it.
    ``instead``: what else the refusal suggests."""
    data = config.get("data") or {}
    val_split = data.get("val_split") or VAL
    if val_split in splits:
        which = (
            f"the {val_split} split itself"
            if len(splits) == 1
            else f"{'+'.join(splits)}, which pools the {val_split} split"
        )
        raise ThresholdError(
            f"{flag} on {which} would measure it on the videos it was chosen on; evaluate "
            "another split with it" + instead
        )
    return val_split


def resolve(
    threshold: float | str | None,
    config,
    workdir: str,
    step: int,
    *,
    splits: tuple[str, ...] = (),
) -> tuple[float, str]:
    """(threshold, source) for ``--threshold``'s value once checkpoint ``step`` is known.

    ``threshold`` None: the default. ``config``: the run's, at the compute
    dtype in use. source: "default", "given" (any number passed, 0.5 too), or
    the val metrics.json it was read from. ``splits``: what is being
    evaluated; ``val`` is refused on val itself (a threshold chosen on the
    data it is measured on flatters its ACC).
    """
    if threshold is None:
        return metrics_lib.DEFAULT_THRESHOLD, DEFAULT_SOURCE
    if threshold != VAL:
        return float(threshold), GIVEN_SOURCE
    val_split = val_split_of(config, splits, "--threshold val", ", or pass --threshold P")
    # Found as evaluate finds it: a relative config.data.dir read from another cwd
    # would skip the stale-build check in silence.
    data_dir = run_data_dir(config, workdir)
    return val_eer_threshold(workdir, step, str(config.model.dtype), data_dir, val_split)


def describe(threshold: float, source: str) -> str:
    """One line for the printout: the threshold and how it was chosen."""
    how = {DEFAULT_SOURCE: "default", GIVEN_SOURCE: "--threshold"}.get(
        source, f"--threshold val: the video-level EER threshold of {source}"
    )
    return f"threshold {eval_names.threshold_text(threshold)} ({how})"


def val_calibration(
    workdir: str,
    step: int,
    compute_dtype: str,
    data_dir: str | None = None,
    val_split: str = VAL,
) -> tuple[dict, str]:
    """(Platt map at even odds, metrics.json relative to ``workdir``) that
    ``evaluate --split val`` fitted for checkpoint ``step`` in ``compute_dtype``
    (`ldattn_jax.calibration`), found as `val_eer_threshold` finds the threshold."""
    return val_value(
        workdir,
        step,
        compute_dtype,
        data_dir,
        val_split,
        flag="--calibration val",
        what="calibration",
        read=lambda doc: doc["calibration"]["fit"],
        check=calibration.validate,
    )


def add_calibration_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--calibration",
        choices=(VAL,),
        default=None,
        help=f"val: {what}, through the Platt map (at even odds: fakes and reals equally "
        "likely) that evaluate --split val fitted for the same checkpoint and dtype "
        "(docs/evaluation.md)",
    )


def resolve_calibration(
    value: str | None, config, workdir: str, step: int, *, splits: tuple[str, ...] = ()
) -> tuple[dict, str] | None:
    """(map, source) for ``--calibration``'s value once checkpoint ``step`` is
    known; None without the flag. Refused on the val split itself."""
    if value is None:
        return None
    val_split = val_split_of(config, splits, "--calibration val")
    data_dir = run_data_dir(config, workdir)
    return val_calibration(workdir, step, str(config.model.dtype), data_dir, val_split)

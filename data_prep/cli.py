"""The argument parser of every command line in data_prep and ldattn_jax.

Our commands grew two spellings of long flags: data_prep and the benchmarks
write ``--frames-per-video`` and ``--no-progress``, while evaluate and predict
write ``--frames_per_video`` and ``--no_progress`` beside the ml_collections
overrides (``--config.model.dtype``). Nobody should have to remember which
command uses which, so this parser reads ``-`` and ``_`` inside a long flag as
the same character: ``--batch-size`` reaches evaluate's ``--batch_size``.

A flag is rewritten only to the one flag this parser defines in that form;
``--config.*`` overrides (which no parser defines) pass as written, as does
everything after a bare ``--``. This lives in data_prep, the lower layer:
ldattn_jax imports data_prep, never the other way round.
"""

from __future__ import annotations

import argparse
import difflib
import sys


def _canonical(flag: str) -> str:
    return "--" + flag[2:].replace("_", "-")


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose long flags match with ``-`` or ``_`` alike."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self.respelled(args), namespace)

    def respelled(self, args: list[str]) -> list[str]:
        """``args`` with each long flag in the spelling this parser defines."""
        known = [s for s in self._option_string_actions if s.startswith("--")]
        by_canonical: dict[str, list[str]] = {}
        for flag in known:
            by_canonical.setdefault(_canonical(flag), []).append(flag)
        out = list(args)
        for i, arg in enumerate(out):
            if arg == "--":
                break  # what follows is positional, whatever it looks like
            if not arg.startswith("--"):
                continue
            flag, sep, value = arg.partition("=")
            # One defined flag of this canonical form: that one. None (an
            # override such as --config.model.dtype, a typo) or two defined
            # spellings (each then meant as written): as it is.
            match = by_canonical.get(_canonical(flag), [])
            if len(match) == 1:
                out[i] = match[0] + sep + value
        return out

    def parse_with_overrides(self, args=None) -> tuple[argparse.Namespace, list[str]]:
        """(this parser's arguments, the ``--config.*`` overrides) of a command
        that passes what it does not define to ml_collections. Anything else it
        does not define (a typo'd flag, a stray word) is refused, exit 2, with
        the nearest flag, not handed on to fail as a malformed override."""
        parsed, overrides = self.parse_known_args(args)
        for i, item in enumerate(overrides):
            if item.startswith("--config."):
                continue
            before = overrides[i - 1] if i else ""
            if not item.startswith("--") and before.startswith("--config.") and "=" not in before:
                continue  # the value of '--config.KEY VALUE'
            flag = item.split("=", 1)[0]
            close = difflib.get_close_matches(flag, list(self._option_string_actions), n=1)
            self.error(
                f"unrecognized argument {flag}" + (f"; did you mean {close[0]}?" if close else "")
            )
        return parsed, overrides


def one_line(error: BaseException) -> str:
    """An error's message as one line of a command's output: a message that
    spans lines (a path, a wrapped library error) must not read as several
    errors; a KeyError's without the quotes str() adds; the type when empty."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    return " ".join(str(text).split()) or type(error).__name__

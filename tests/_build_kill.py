"""Runs `python -m data_prep.build ARGS...` and SIGKILLs it right after its Nth video.

    python tests/_build_kill.py N ARGS...

For tests/test_data_shards.py's resume test: a kill sent from outside lands
wherever the build happens to be (a short build may even finish first); this
one comes from inside, so it always lands with exactly N videos done (their
markers written) and no shards begun. Only with --workers 1: then every video
is processed in this process, the one that would go on to write the shards
(with a pool, process_video runs in the workers and is not patched).
"""

import os
import signal
import sys

from data_prep import build


def main(argv: list[str]) -> int:
    after, args = int(argv[0]), argv[1:]
    if build.parse_args(args).workers != 1:
        sys.exit("tests/_build_kill.py: only with --workers 1 (see its docstring)")
    real = build.process_video
    finished = 0

    def process_video(*a, **kw):
        nonlocal finished
        status = real(*a, **kw)  # its marker (if any) is written when this returns
        finished += 1
        if finished == after:
            os.kill(os.getpid(), signal.SIGKILL)
        return status

    # _run_faces looks process_video up in the module at each call.
    build.process_video = process_video
    return build.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

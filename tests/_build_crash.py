"""Worker initializers for tests/test_data_build.py that make a worker process die.

They must live in an importable module (not a test file): the build's worker
processes import them by name, like the real initializer.
"""

import os
import signal


def die_on(target: str, once_flag: str | None = None) -> None:
    """The build's initializer, then: SIGKILL this process when it starts on a video
    whose path contains `target` (a segfault in dlib/FFmpeg or the OOM killer look
    the same to the pool). With `once_flag`, only the first time (the flag file
    records it): a crash that does not recur."""
    from data_prep import build, faces

    build._init_worker()
    real = faces.extract_stacks

    def extract_stacks(path, *args, **kwargs):
        if target in str(path):
            if once_flag is None:
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                os.close(os.open(once_flag, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(path, *args, **kwargs)

    faces.extract_stacks = extract_stacks


def fail_to_start() -> None:
    """An initializer that fails, as when dlib's model files are missing."""
    raise OSError("shape_predictor_68_face_landmarks.dat: no such file")


def die_now() -> None:
    """A task that SIGKILLs the worker running it."""
    os.kill(os.getpid(), signal.SIGKILL)

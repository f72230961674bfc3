"""The exceptions that cli.py turns into one-line messages and exit codes.

Library code raises these for problems a user can fix (bad spec, missing data,
no GPU); anything else is a bug and keeps its traceback.
"""

import re


class KexpError(Exception):
    """A problem the user can fix; the message says what and where."""

    exit_code = 1


class SpecError(KexpError):
    """The experiment spec (YAML file or --set override) is invalid."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class DataError(KexpError):
    """A data file is missing, unreadable or malformed."""


class DeviceError(KexpError):
    """The requested device does not exist on this machine."""


class TrainingError(KexpError):
    """Training stopped for a reason the user should see (e.g. NaN loss)."""


class Diverged(TrainingError):
    """The loss became NaN or infinite: the run stops and keeps its last good checkpoint."""

    exit_code = 3


class ResumeRefused(KexpError):
    """`kexp resume` cannot continue this run as it is (edited config, changed data, diverged)."""

    exit_code = 2


class RunDirError(KexpError):
    """A run directory is missing or not a kexp run."""


class ModelError(KexpError):
    """The model options are valid on their own but cannot build a model for this data."""

    exit_code = 2


class PluginError(KexpError):
    """A plugin failed to import (exit 2), raised in its own code (exit 1), or changed since the run it is asked for."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int = 2):
        self.exit_code = exit_code
        super().__init__(message)


class Interrupted(KexpError):
    """The run was stopped by a signal (SIGTERM from a scheduler, Ctrl-C)."""

    def __init__(self, signal_name: str, exit_code: int):
        self.signal_name = signal_name
        self.exit_code = exit_code
        self.detail = ""  # what was saved, and how to continue: filled in when the run records the stop
        super().__init__(f"interrupted by {signal_name}")

    def __str__(self) -> str:
        return f"interrupted by {self.signal_name}{self.detail}"


class PeerLost(TrainingError):
    """Another process of a multi-process run stopped answering (killed, or its machine gone)."""


def repeats_once(text: str) -> str:
    """XLA's nested errors repeat their prefix ("Error dispatching computation: " a hundred times): once is enough."""
    return re.sub(r"([^:]+: )\1+", r"\1", text)


def describe_os_error(exc: OSError) -> str:
    """One line for a failed file operation: the file(s) it named and the errno's words
    ("runs/x/model.keras: No space left on device"), never Python's "[Errno 28]" repr."""
    words = exc.strerror or str(exc) or type(exc).__name__
    files = [str(f) for f in (exc.filename, getattr(exc, "filename2", None)) if f is not None]
    return f"{' -> '.join(files)}: {words}" if files else words

"""Errors a user can cause, each with its own process exit code.

The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``;
anything that is not a :class:`TorchslimError` is a bug and keeps its traceback.
"""


class TorchslimError(Exception):
    """Base class: a problem with the user's input or environment."""

    exit_code = 1


class ConfigError(TorchslimError):
    """A config file or flag is missing, malformed or inconsistent."""

    exit_code = 2


class DataError(TorchslimError):
    """A dataset is missing, malformed, or holds an unreadable sample."""

    exit_code = 3


class ModelError(TorchslimError):
    """A model name, factory, pretrained file or saved model is wrong."""

    exit_code = 4


class PruningError(TorchslimError):
    """A pruning request cannot be met (pattern matches nothing, target unreachable)."""

    exit_code = 5


class CheckpointError(TorchslimError):
    """A checkpoint is unwritable, corrupt, or belongs to another run."""

    exit_code = 6


class TrainingError(TorchslimError):
    """Training diverged (NaN/inf loss) or cannot continue."""

    exit_code = 7

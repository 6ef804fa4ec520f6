"""The ``torchslim`` command line: one sub-command per tool."""

from .main import main

__all__ = ["main"]

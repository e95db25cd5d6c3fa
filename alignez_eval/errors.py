"""Exceptions raised by the library. Each message names the problem and the fix; the CLI prints it
as one line on stderr and exits non-zero."""

from __future__ import annotations


class AlignEZError(Exception):
    """Base class: a user-facing error whose message says what to do."""


class ArtifactError(AlignEZError):
    """An edit artifact is missing, corrupt, or does not fit the model."""


class ArchitectureError(AlignEZError):
    """The decoder layers / component of a model could not be located."""


class ConfigError(AlignEZError):
    """Bad settings (model_args, CLI flags, spec files)."""


class DataError(AlignEZError):
    """Bad input data (queries, preference pairs, run directories)."""


class JudgeError(AlignEZError):
    """A judge backend failed in a way that cannot be retried."""

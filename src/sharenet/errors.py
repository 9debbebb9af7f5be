"""The project's own error types: the CLI prints their message in one line and exits 2."""


class SharenetError(Exception):
    """Any failure sharenet explains to the user (bad input, data, checkpoint)."""


class PlanMismatchError(SharenetError, ValueError):
    """Weights made for one sharing plan offered to a model with another."""


class WeightsError(SharenetError):
    """A weight file that is missing, corrupt, or of an unknown layout."""


class InvalidArgumentError(SharenetError, ValueError):
    """An invalid model depth, width, sharing scheme, option or config value."""


class UnknownModelError(SharenetError, KeyError):
    """A model name that matches no family."""

    def __str__(self) -> str:  # KeyError would print the message inside quotes
        return str(self.args[0])


class WriteError(SharenetError):
    """A run's file that cannot be written (a full disk, a read-only directory); what was written before is kept."""

    exit_code = 1

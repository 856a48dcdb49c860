"""User-facing errors: the CLI prints their message (no traceback) and exits with status 2."""


class MedpoError(Exception):
    """A clear, actionable error caused by input, configuration or environment (not a bug)."""

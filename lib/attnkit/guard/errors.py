"""The one exception the grading guard raises."""


class GuardError(PermissionError):
    """Raised when the guard refuses an operation during grading."""

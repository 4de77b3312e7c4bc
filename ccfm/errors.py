"""The project's one error type: a user-facing problem with a message that names the fix."""


class CCFMError(Exception):
    """A problem with the user's input or environment.

    The message says what was expected, what arrived, and how to fix it. The CLI prints it as
    one line and exits with code 1; library code never prints it.
    """


class Interrupted(CCFMError):
    """The user stopped a stage (Ctrl-C); the message says what was kept and how to continue. Exit code 130."""

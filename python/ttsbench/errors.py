"""One exception type for errors the user can fix; the CLI prints it as one line and exits non-zero."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by input or environment, with a message that says what to do.

    ``exit_code`` follows sysexits loosely: 2 usage/bad input, 3 unreachable service,
    4 failed gate/verdict, 1 anything else.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code

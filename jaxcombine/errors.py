"""The one exception type that reaches users as a one-line message, the one warning type
(printed as one line by the CLI), and a helper to make a one-line message."""


class JaxcombineError(Exception):
    """A user-facing error: bad input, missing weights, impossible sizes.

    The CLI prints ``jaxcombine: error: <message>`` and exits non-zero; the
    Python API lets it propagate. Anything else escaping is a bug.
    """


class JaxcombineWarning(UserWarning):
    """Something a user should know that does not stop the work (a mask that leaves a term
    without area, a compile cache that cannot be used). The CLI prints
    ``jaxcombine: warning: <message>`` on one line; the Python API warns as usual."""


def one_line(e: BaseException) -> str:
    """An exception's message on one line (for wrapping a library's error in ours)."""
    return " ".join(str(e).split()) or type(e).__name__

"""The one exception type that reaches users as a one-line message, and a helper to make one."""


class JaxcombineError(Exception):
    """A user-facing error: bad input, missing weights, impossible sizes.

    The CLI prints ``jaxcombine: error: <message>`` and exits non-zero; the
    Python API lets it propagate. Anything else escaping is a bug.
    """


def one_line(e: BaseException) -> str:
    """An exception's message on one line (for wrapping a library's error in ours)."""
    return " ".join(str(e).split()) or type(e).__name__

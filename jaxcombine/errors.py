"""The one exception type that reaches users as a one-line message."""


class JaxcombineError(Exception):
    """A user-facing error: bad input, missing weights, impossible sizes.

    The CLI prints ``jaxcombine: error: <message>`` and exits non-zero; the
    Python API lets it propagate. Anything else escaping is a bug.
    """

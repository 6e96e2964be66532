"""The console script's first code: start-up that a Ctrl-C cannot cut in half.

A KeyboardInterrupt in the middle of an import surfaces as an ImportError traceback.
So a Ctrl-C while the command line's modules load is only noted, and once they are
loaded the command exits 130, as for any other interrupt. JAX itself is imported later,
only by the commands that compute, under the same guard
(:func:`jaxcombine.cli.main.start_jax`). From then on :func:`jaxcombine.cli.main.main`
handles signals (a run stops after its current chunk).
"""

from __future__ import annotations

import signal
import sys


def main(argv: list[str] | None = None) -> None:
    noted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    try:
        from jaxcombine.cli import main as cli
        from jaxcombine.run import interrupts

        cli.one_line_warnings()
        # Until cli.main takes SIGINT over, a Ctrl-C is noted where the run looks for it
        # (it starts stopped and exits 130). No moment is left with Python's default
        # handler, whose KeyboardInterrupt would be a traceback here (seen under load).
        signal.signal(signal.SIGINT, lambda signum, frame: interrupts.RECEIVED.append(signum))
    except BaseException:
        signal.signal(signal.SIGINT, previous)
        raise
    if noted:
        sys.stderr.write("jaxcombine: interrupted\n")
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # none may cut the shutdown short
        sys.exit(cli.EXIT_INTERRUPTED)
    cli.main(argv)

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

        cli.one_line_warnings()
    finally:
        signal.signal(signal.SIGINT, previous)
    if noted:
        sys.stderr.write("jaxcombine: interrupted\n")
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # none may cut the shutdown short
        sys.exit(cli.EXIT_INTERRUPTED)
    from jaxcombine.run import interrupts

    interrupts.note_interrupts()  # a Ctrl-C swallowed by a gc callback still counts
    cli.main(argv)

"""Ctrl-C and SIGTERM as a request to stop between chunks, for the drivers (job, study, batch).

The engine never touches signals: it asks a ``stop`` callback between chunks.
A driver wraps its run in :func:`stop_requests` and passes the event's
``is_set``, so the first Ctrl-C (or a SIGTERM from a scheduler) ends the run
after the current chunk with every result so far written; a second Ctrl-C
aborts at once.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import threading
from types import FrameType
from typing import Iterator


@contextlib.contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C or SIGTERM while the block runs (or already set,
    when a Ctrl-C came before it and :func:`note_interrupts` noted it).

    A second Ctrl-C raises KeyboardInterrupt at once (not inside a garbage-collection
    callback, :func:`in_gc_callback`: there it waits for the next one). Outside the main
    thread (where signal handlers cannot be installed) the event is never set.
    """
    stop = threading.Event()
    if RECEIVED:
        stop.set()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.is_set() and signum == signal.SIGINT and not in_gc_callback(frame):
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


RECEIVED: list[int] = []  # Ctrl-Cs noted by note_interrupts' handler


def note_interrupts() -> None:
    """Outside :func:`stop_requests`, a Ctrl-C is noted and raises KeyboardInterrupt.

    Python swallows an exception raised while a garbage-collection callback runs (JAX
    has one), printing "Exception ignored" and a traceback; so a Ctrl-C landing there
    (:func:`in_gc_callback`) is only noted. Either way a later :func:`stop_requests`
    starts stopped and the console script exits 130.
    """

    def handler(signum, frame):
        RECEIVED.append(signum)
        if not in_gc_callback(frame):
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)


def in_gc_callback(frame: FrameType | None) -> bool:
    """Whether ``frame`` (a signal handler's) is inside one of ``gc.callbacks``, where an
    exception would be swallowed and printed rather than raised."""
    callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks} - {None}
    while frame is not None:
        if frame.f_code in callbacks:
            return True
        frame = frame.f_back
    return False

"""The console script as a real subprocess, and the one-line error every bad input gets:
shared by the tests of every layer that reach it through the command line."""

import os
import subprocess
import sys


def jaxcombine(*args, cwd=None, check=False) -> subprocess.CompletedProcess:
    """Run ``python -m jaxcombine ARGS`` on the CPU and return the finished process."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "jaxcombine", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode:
        raise AssertionError(proc.stderr)
    return proc


def assert_one_line_error(proc, fragment) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("jaxcombine: error:") and fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout

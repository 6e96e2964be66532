"""The console script as a real subprocess, and the one-line error every bad input gets:
shared by the tests of every layer that reach it through the command line."""

import os
import subprocess
import sys


def command(*args, interpreter_options=()) -> list[str]:
    """``python [INTERPRETER_OPTIONS] -m jaxcombine ARGS`` as an argument list."""
    return [sys.executable, *interpreter_options, "-m", "jaxcombine", *map(str, args)]


def cpu_env(**extra: str) -> dict[str, str]:
    """This process's environment, JAX on the CPU, plus ``extra``."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", **extra}


# The XLA setting the tests' processes turn off to compile faster (tests/conftest.py).
QUICK_COMPILE_SETTING = "xla_cpu_use_fusion_emitters"
QUICK_COMPILE_FLAGS = f"--{QUICK_COMPILE_SETTING}=false"


def default_xla_flags() -> dict[str, str]:
    """XLA_FLAGS without the tests' compile setting, for a test that measures what users
    get: the older fusion emitters allocate less (the memory bound's 64 px run peaked at
    570 MB with them, 669 MB with XLA's defaults; the estimate, 764 MB, is made for the
    defaults)."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    return {"XLA_FLAGS": " ".join(f for f in flags if QUICK_COMPILE_SETTING not in f)}


def host_devices(count: int) -> dict[str, str]:
    """The environment variable that makes XLA show ``count`` CPU devices, added to the
    XLA_FLAGS already set (tests/conftest.py sets its compiler flags there)."""
    flags = os.environ.get("XLA_FLAGS", "")
    return {"XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={count}".strip()}


def start(*args, cwd=None, env=None, interpreter_options=(), **popen) -> subprocess.Popen:
    """Start ``python -m jaxcombine ARGS`` on the CPU and return it running, its output in
    text pipes (``popen`` overrides): for the tests that signal, kill or race a command.
    ``env``: variables added to this process's environment."""
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    return subprocess.Popen(
        command(*args, interpreter_options=interpreter_options),
        cwd=cwd,
        env=cpu_env(**(env or {})),
        **options,
    )


def jaxcombine(*args, cwd=None, env=None, check=False, timeout=600) -> subprocess.CompletedProcess:
    """Run ``python -m jaxcombine ARGS`` on the CPU and return the finished process.
    ``env``: variables added to this process's environment."""
    proc = subprocess.run(
        command(*args),
        cwd=cwd,
        env=cpu_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
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

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


# The XLA settings the tests' processes change to compile faster (tests/conftest.py says
# why): XLA's older CPU fusion emitters, and LLVM's optimisation of the code it emits at
# level 1, not XLA's 2. The CLI subprocesses (start, jaxcombine below) go to level 0.
QUICK_COMPILE_SETTING = "xla_cpu_use_fusion_emitters"
OPTIMIZATION_SETTING = "xla_backend_optimization_level"
QUICK_COMPILE_FLAGS = f"--{QUICK_COMPILE_SETTING}=false --{OPTIMIZATION_SETTING}=1"
CLI_OPTIMIZATION = (f"--{OPTIMIZATION_SETTING}=1", f"--{OPTIMIZATION_SETTING}=0")


def default_xla_flags() -> dict[str, str]:
    """XLA_FLAGS without the tests' compile settings, for a test that measures what users
    get: the older fusion emitters allocate less (the memory bound's 64 px run peaked at
    570 MB with them, 669 MB with XLA's defaults; the estimate, 764 MB, is made for the
    defaults)."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    ours = (QUICK_COMPILE_SETTING, OPTIMIZATION_SETTING)
    return {"XLA_FLAGS": " ".join(f for f in flags if not any(s in f for s in ours))}


def cli_env(extra: dict[str, str] | None) -> dict[str, str]:
    """The environment of a CLI subprocess: :func:`cpu_env` with ``extra``, and LLVM's
    optimisation at level 0 where the tests' level 1 is set and ``extra`` names no
    XLA_FLAGS of its own. The commands the tests run are a few steps at 24-64 px, so
    compiling is nearly all of their time: a default run at 32 px, 4 steps, took 0.74x
    the CPU seconds of level 1 and eval 0.63x of XLA's level 2 (docs/benchmarks.md)."""
    env = cpu_env(**(extra or {}))
    if "XLA_FLAGS" not in (extra or {}):
        env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(*CLI_OPTIMIZATION)
    return env


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
        env=cli_env(env),
        **options,
    )


def jaxcombine(*args, cwd=None, env=None, check=False, timeout=600) -> subprocess.CompletedProcess:
    """Run ``python -m jaxcombine ARGS`` on the CPU and return the finished process.
    ``env``: variables added to this process's environment."""
    proc = subprocess.run(
        command(*args),
        cwd=cwd,
        env=cli_env(env),
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

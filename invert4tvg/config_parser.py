"""Reading a configuration: ``--config file.yaml`` plus ``--field value`` overrides (the command line wins), as TRL's
``TrlParser`` does, with every mistake reported in one line that names the file or flag and the field.

- A YAML key or a flag that is no field is an error with the closest field ("did you mean `num_generations`?").
  No abbreviations: argparse would otherwise take ``--num_generation 4`` for ``--num_generations 4``.
- YAML values are checked against the field's type (argparse converts command-line strings, but takes a YAML value
  as it is: ``learning_rate: true`` would train at 1.0). ``5e-5``, which YAML reads as a string, is a number here
  as it is on the command line.
- Ranges and choices (:func:`invert4tvg.config_checks.check_fields`) and the dataclasses' own checks run on the
  merged values; an error there names the file when the value came from it, the flag when it came from the
  command line.

Every error is a :class:`~invert4tvg.config_checks.ConfigError`; the recipes print it as one line and exit 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

from invert4tvg.config_checks import ConfigError, check_fields
from invert4tvg.errors import did_you_mean

_NONE = type(None)


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def coerce(annotation: Any, value: Any) -> Any:
    """``value`` as a field of type ``annotation`` holds it; raises ``TypeError`` saying what was expected."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not _NONE]
        if value is None and len(options) < len(typing.get_args(annotation)):
            return None
        if len(options) == 1:
            return coerce(options[0], value)
        for option in options:  # e.g. str | list[str]: the first that takes it
            try:
                return coerce(option, value)
            except TypeError:
                continue
        raise TypeError(f"expected {annotation}, got {_describe(value)}")
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        items = value if isinstance(value, list) else [value]  # TRL's `report_to: wandb` style
        return [coerce(item, v) for v in items]
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise TypeError(f"expected true or false, got {_describe(value)}")
    if annotation is int:
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(f"expected an integer, got {_describe(value)}")
    if annotation is float:
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value.strip())
        if number is None:
            raise TypeError(f"expected a number, got {_describe(value)}")
        if not math.isfinite(number):
            raise TypeError(f"expected a finite number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"expected a string, got {_describe(value)} (quote it in YAML)")
    return value


class _Parser:
    """argparse errors (a bad value on the command line) become one-line :class:`ConfigError` s."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(f"command line: {message}")


def _argparser(types_: tuple[type, ...], with_help: bool):
    from trl import TrlParser

    parser_class = type("ConfigArgumentParser", (_Parser, TrlParser), {})
    parser = parser_class(types_, allow_abbrev=False)
    if with_help:
        # --config is taken out of the arguments before argparse sees them, so it is not among the fields --help lists.
        parser.add_argument(
            "--config",
            help="YAML file of these fields (recipes/configs/); a --field value on the command line wins over it",
        )
    return parser


def split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """(the ``--config`` file, the other arguments)."""
    config, rest, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config" or arg.startswith("--config="):
            if config is not None:
                raise ConfigError("command line: --config given twice; give one YAML file")
            if "=" in arg:
                config = arg.split("=", 1)[1]
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                config, i = argv[i + 1], i + 1
            else:
                raise ConfigError("command line: --config needs a YAML file")
        else:
            rest.append(arg)
        i += 1
    return config, rest


def read_yaml(path: str) -> dict[str, Any]:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--config {path}: no such file (relative to {Path.cwd()})")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of field: value, got a {type(data).__name__}")
    return data


def _flags(argv: list[str]) -> set[str]:
    """Field names given on the command line (``--name``, ``--name=v``, ``--no_name``, dashes or underscores)."""
    names = set()
    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            names.add(name)
            names.add(name.removeprefix("no_"))
    return names


def parse(
    types_: tuple[type, ...], argv: list[str] | None = None, ignore_unknown: bool = False
) -> tuple[Any, ...]:
    """The dataclasses ``types_`` filled from ``--config`` and the command line. ``ignore_unknown``: YAML keys of
    other dataclasses are passed over (reading a training config for its data and model settings only)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_help = "-h" in argv or "--help" in argv
    config, cli = split_config(argv)
    fields: dict[str, tuple[type, Any]] = {}
    for dtype in types_:
        hints = typing.get_type_hints(dtype)
        for f in dataclasses.fields(dtype):
            if f.init:
                fields[f.name] = (dtype, hints[f.name])

    from_file: dict[str, Any] = {}
    if config is not None:
        data = read_yaml(config)
        env = data.pop("env", None)  # TrlParser's `env:` section: environment variables for the run
        if env is not None and not isinstance(env, dict):
            raise ConfigError(f"{config}: env must be a mapping of VARIABLE: value")
        for key, value in data.items():
            if key not in fields:
                if ignore_unknown:
                    continue
                raise ConfigError(f"{config}: unknown field `{key}`{did_you_mean(str(key), fields)}")
            try:
                from_file[key] = coerce(fields[key][1], value)
            except TypeError as err:
                raise ConfigError(f"{config}: {key}: {err}") from None
        for key, value in (env or {}).items():
            os.environ[str(key)] = str(value)

    parser = _argparser(types_, wants_help)
    parser.set_defaults(**from_file)
    namespace, remaining = parser.parse_known_args(cli)
    if remaining:
        unknown = next((a for a in remaining if a.startswith("-")), remaining[0])
        name = unknown.lstrip("-").split("=", 1)[0]
        hint = did_you_mean(f"--{name}", [f"--{n}" for n in fields])
        where = (
            "command line: unknown flag" if unknown.startswith("-") else "command line: unexpected argument"
        )
        raise ConfigError(f"{where} {unknown}{hint}")

    given = _flags(cli)
    outputs = []
    for dtype in types_:
        names = [f.name for f in dataclasses.fields(dtype) if f.init]
        values = {n: getattr(namespace, n) for n in names if hasattr(namespace, n)}
        try:
            obj = dtype(**values)
            check_fields(obj)
        except ConfigError as err:
            raise ConfigError(_where(err, config, from_file, given)) from None
        except (TypeError, ValueError) as err:  # a dataclass's own check that is not a ConfigError yet
            raise ConfigError(_where(ConfigError(str(err)), config, from_file, given)) from None
        outputs.append(obj)
    return tuple(outputs)


def _where(err: ConfigError, config: str | None, from_file: dict[str, Any], given: set[str]) -> str:
    """The message prefixed with where the offending value came from: the flag, the file, or the defaults."""
    field = getattr(err, "field", None)
    message = str(err)
    if field is None or message.startswith(("command line", f"{config}:")):
        return message
    if field in given:
        return f"command line --{field}: {message}"
    if config is not None and field in from_file:
        return f"{config}: {message}"
    return message

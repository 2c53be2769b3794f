"""The project config: ``rfmx.toml``, ``[tool.rfmx]`` in ``pyproject.toml`` or ``--config FILE``,
read into click's ``default_map``; and ``rfmx config show``.

A config holds option values the way the command line spells them: a shared top level
(``customer = "user_id"``, ``timezone = "Europe/Berlin"``, ``amount-scale = 3``) that applies
to every command with that option, and one table per command (``[score]``, ``[timeline]``,
...) that applies to that command only.  Click looks a value up in ``Context.default_map``
only when the command line does not give the option, so the command line always wins and
every command, option and check stays as it is: a config only moves the defaults.

Which files count, lowest first: ``pyproject.toml``'s ``[tool.rfmx]``, then ``rfmx.toml``
(both in the working directory; a key of the later file replaces the earlier one's).
``--config FILE`` (on ``rfmx`` or on any command) replaces both: a scheduled job that names
its config gets the same settings from any working directory.  Within one file a command's
table beats the top level.

Every key is checked against the commands before anything runs: an unknown key or
section, or a value of the wrong type, is one line naming the file, the line and the key,
exit code 2.  Nothing here imports rfmx's engine, so ``rfmx --help`` stays instant.
"""
from __future__ import annotations

import json
import os
import re

import click

#: files read from the working directory, lowest precedence first
PYPROJECT = "pyproject.toml"
PROJECT_FILE = "rfmx.toml"
#: parameters a config cannot set: they are about this run of the CLI, not the project
NOT_CONFIGURABLE = frozenset({"help", "version", "config"})
#: options whose value may also be a TOML table (``weights = {monetary = 40, ...}``),
#: written back as the command line's ``K=V,...``
TABLE_VALUED = frozenset({"weights", "tiers"})
_META = "rfmx.config"


class ConfigError(click.ClickException):
    """A config file that cannot be used: a usage error (exit code 2), one line naming the file,
    line and key.  Not an :class:`rfmx.errors.RfmxError` (exit 1, via ``run_guarded``): it is
    raised while click parses options, before a command body runs."""

    exit_code = 2


# --- reading files ---------------------------------------------------------------------------

def _read_toml(path: str) -> tuple[dict, str]:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
        return tomllib.loads(text), text
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """1-based line of each ``key = ...`` under its table, as ``(*table, key) -> line``.

    tomllib keeps no positions; this scan finds the simple spelling (``[a.b]`` headers,
    bare or quoted keys), which is all an rfmx config needs.  A key it cannot place gets
    no line in messages, nothing worse."""
    lines, table = {}, ()
    for n, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = tuple(part.strip().strip("\"'") for part in header.group(1).split("."))
            lines.setdefault(("[]", *table), n)  # the table's own header line
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*table, key.group(1).strip("\"'")), n)
    return lines


class ConfigFile:
    """One config file's settings: ``top`` (the shared top level) and ``sections`` (a table
    per command), with ``where(section, key)`` giving ``FILE:LINE`` for messages."""

    def __init__(self, path: str, data: dict, text: str, prefix: tuple[str, ...] = ()):
        self.path = path
        self.prefix = prefix
        self._lines = _key_lines(text)
        self.top = {k: v for k, v in data.items() if not isinstance(v, dict) or k in TABLE_VALUED}
        self.sections = {k: v for k, v in data.items() if isinstance(v, dict) and k not in TABLE_VALUED}

    @classmethod
    def read(cls, path: str, *, pyproject: bool = False) -> "ConfigFile | None":
        data, text = _read_toml(path)
        if pyproject or os.path.basename(path) == PYPROJECT:
            tool = data.get("tool", {}).get("rfmx")
            if tool is None:
                return None
            if not isinstance(tool, dict):
                raise ConfigError(f"{path}: [tool.rfmx] must be a table")
            return cls(path, tool, text, ("tool", "rfmx"))
        return cls(path, data, text)

    def where(self, section: str | None, key: str | None = None) -> str:
        parts = (*self.prefix, *([section] if section else []))
        line = self._lines.get((*parts, key)) if key is not None else None
        if line is None and section:
            line = self._lines.get(("[]", *parts))
        return f"{self.path}:{line}" if line else self.path

    def table_name(self, section: str | None) -> str:
        parts = (*self.prefix, *([section] if section else []))
        return f"[{'.'.join(parts)}]" if parts else "the top level"


def discover(explicit: str | None = None) -> list[ConfigFile]:
    """The config files of this run, lowest precedence first: ``explicit`` alone when given,
    else ``pyproject.toml`` (``[tool.rfmx]``) and ``rfmx.toml`` of the working directory."""
    if explicit is not None:
        found = ConfigFile.read(explicit)
        return [found] if found is not None else []
    files = []
    if os.path.isfile(PYPROJECT):
        found = ConfigFile.read(PYPROJECT, pyproject=True)
        if found is not None:
            files.append(found)
    if os.path.isfile(PROJECT_FILE):
        files.append(ConfigFile.read(PROJECT_FILE))
    return files


# --- checking keys against the commands ------------------------------------------------------

def config_key(param: click.Parameter) -> str | None:
    """The key that sets ``param`` in a config: its long option name without ``--`` (``time``,
    ``amount-scale``; ``log`` for ``--log/--no-log``), or an argument's name (``sources``);
    None for what a config cannot set."""
    if param.name in NOT_CONFIGURABLE or getattr(param, "hidden", False):
        return None
    if isinstance(param, click.Argument):
        return param.name
    longs = [o for o in param.opts if o.startswith("--")]
    return longs[0][2:] if longs else None


def command_keys(command: click.Command) -> dict[str, click.Parameter]:
    """``{key: parameter}`` of every option a config may set for ``command``; keys are
    normalized (``amount_scale`` and ``amount-scale`` are one key)."""
    keys = {}
    for param in command.params:
        key = config_key(param)
        if key is not None:
            keys[_norm(key)] = param
    return keys


def _norm(key: str) -> str:
    return key.replace("_", "-")


def _toml(value) -> str:
    """A value as TOML spells it (for messages and ``config show``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return str(value)


def _value(command: click.Command, param: click.Parameter, value, where: str, key: str):
    """``value`` checked for ``param`` of ``command`` (TOML type first, then click's own
    conversion: choices, ranges) and returned as ``default_map`` holds it."""
    def bad(why: str):
        return ConfigError(f"{where}: {key} = {_toml(value) if not isinstance(value, dict) else '{...}'}: {why} "
                           f"(rfmx {command.name} {_spelling(param)})")

    name = param.name
    if isinstance(value, dict):
        if name not in TABLE_VALUED:
            raise bad("a table is not a value of this option")
        parts = []
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise bad(f"'{k}' must be a number")
            parts.append(f"{k}={v:g}")
        value = ",".join(parts)
    many = getattr(param, "multiple", False) or param.nargs == -1
    if many:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("expected a list of strings")
    elif isinstance(param, click.Option) and (param.is_flag or param.is_bool_flag):
        if not isinstance(value, bool):
            raise bad("expected true or false")
    elif isinstance(param.type, (click.types.IntParamType,)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("expected an integer")
    elif isinstance(param.type, click.types.FloatParamType):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("expected a number")
    elif not isinstance(value, str):
        raise bad("expected a string")
    try:
        param.type_cast_value(click.Context(command), value)
    except click.BadParameter as exc:
        raise bad(exc.message.rstrip(".")) from None
    return value


def _spelling(param: click.Parameter) -> str:
    return param.name.upper() if isinstance(param, click.Argument) else "/".join(param.opts)


def build_defaults(files: list[ConfigFile], commands: dict[str, click.Command]):
    """``(default_map, origins, entries)`` from ``files`` (lowest precedence first):
    ``default_map`` as click wants it, ``{command: {parameter name: value}}``; ``origins``
    the ``FILE:LINE`` of each of those values, ``{(command, parameter name): where}``;
    ``entries`` the settings as written, ``{(section or None, key): (value, where)}``."""
    configurable = {name: command_keys(cmd) for name, cmd in commands.items()}
    defaults: dict[str, dict] = {}
    origins: dict[tuple[str, str], str] = {}
    entries: dict[tuple[str | None, str], tuple] = {}
    for f in files:
        for key, value in f.top.items():
            entries[(None, _norm(key))] = (value, f.where(None, key))
            owners = [name for name, keys in configurable.items() if _norm(key) in keys]
            if not owners:
                raise ConfigError(f"{f.where(None, key)}: unknown key '{key}' at {f.table_name(None)}: no rfmx "
                                  f"command has an option --{_norm(key)}")
            for name in owners:
                param = configurable[name][_norm(key)]
                defaults.setdefault(name, {})[param.name] = _value(commands[name], param, value, f.where(None, key),
                                                                   key)
                origins[(name, param.name)] = f.where(None, key)
        for section, table in f.sections.items():
            if section not in configurable:
                known = ", ".join(sorted(configurable))
                raise ConfigError(f"{f.where(section)}: unknown section {f.table_name(section)}: not an rfmx command "
                                  f"({known})")
            for key, value in table.items():
                where = f.where(section, key)
                entries[(section, _norm(key))] = (value, where)
                param = configurable[section].get(_norm(key))
                if param is None:
                    raise ConfigError(f"{where}: unknown key '{key}' in {f.table_name(section)}: rfmx {section} has "
                                      f"no option --{_norm(key)}")
                defaults.setdefault(section, {})[param.name] = _value(commands[section], param, value, where, key)
                origins[(section, param.name)] = where
    return defaults, origins, entries


def configured_commands(group: click.Group) -> dict[str, click.Command]:
    """The commands a config may have a table for (every command but ``config`` itself)."""
    return {name: cmd for name, cmd in group.commands.items() if name != "config"}


def apply(ctx: click.Context, explicit: str | None) -> None:
    """Read the config files of this run into ``ctx.default_map`` (``ctx``: the ``rfmx``
    group's context); the files and the origin of each value go to ``ctx.meta``."""
    files = discover(explicit)
    defaults, origins, entries = build_defaults(files, configured_commands(ctx.command))
    ctx.default_map = defaults
    ctx.meta[_META] = {"files": [f"{f.path} [tool.rfmx]" if f.prefix else f.path for f in files],
                       "origins": origins, "defaults": defaults, "entries": entries}


def command_config_option(command: click.Command) -> None:
    """Add ``--config FILE`` to ``command``: this file's settings replace those the ``rfmx``
    group read (eager, so they are in place before any other option takes its default)."""
    def use(ctx: click.Context, param, value):
        # An error in the group's config (read by ``rfmx``'s callback) is raised here, so
        # `rfmx COMMAND --help` (processed first) still works; this command's --config replaces it.
        failed = ctx.meta.pop(_META + ".error", None)
        if value is None:
            if failed is not None:
                raise failed
            return
        root = ctx.find_root()
        files = discover(value)
        defaults, origins, entries = build_defaults(files, configured_commands(root.command))
        ctx.default_map = defaults.get(ctx.info_name, {})
        ctx.meta[_META] = {"files": [f"{f.path} [tool.rfmx]" if f.prefix else f.path for f in files],
                           "origins": origins, "defaults": defaults, "entries": entries}

    command.params.append(click.Option(
        ["--config"], type=click.Path(dir_okay=False), default=None, is_eager=True, expose_value=False,
        callback=use, metavar="FILE",
        help="Settings from this TOML file instead of ./rfmx.toml and ./pyproject.toml [tool.rfmx]; "
             "options given here still win (rfmx config show)."))


# --- rfmx config show ------------------------------------------------------------------------

def _shown(value) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, tuple):
        value = list(value)
    return _toml(value)


def effective_settings(ctx: click.Context, command: click.Command, name: str, args: list[str]):
    """``[(key, value, source)]`` for every configurable option of ``command`` as ``rfmx
    NAME ARGS`` would run it: source is ``default``, ``FILE:LINE`` or ``command line``."""
    root_meta = ctx.meta.get(_META) or {}
    sub = command.make_context(name, list(args), parent=ctx, resilient_parsing=True,
                               default_map=(root_meta.get("defaults") or {}).get(name))
    origins = (sub.meta.get(_META) or {}).get("origins", {})
    rows = []
    for param in command.params:
        key = config_key(param)
        if key is None:
            continue
        source = sub.get_parameter_source(param.name)
        if source == click.core.ParameterSource.DEFAULT_MAP:
            where = origins.get((name, param.name), "config")
        elif source in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT):
            where = "command line"
        else:
            where = "default"
        rows.append((key, sub.params.get(param.name), where))
    return rows


def _lines(rows) -> list[str]:
    width = max((len(k) for k, _, _ in rows), default=0)
    vwidth = min(max((len(_shown(v)) for _, v, _ in rows), default=0), 40)
    return [f"  {k.ljust(width)}  {_shown(v).ljust(vwidth)}  {w}" for k, v, w in rows]


@click.group("config")
def config_group():
    """The project config: rfmx.toml, pyproject.toml [tool.rfmx] or --config FILE.

    \b
    Examples:
      rfmx config show                           # every setting the config files make
      rfmx config show score                     # what rfmx score would use, and from where
      rfmx config show score orders.parquet --bins 4   # ... with these options given
      rfmx --config team.toml config show timeline
    """


@config_group.command("show", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("command", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def show(ctx, command, args):
    """Print the effective settings and where each came from (default, FILE:LINE, command line).

    Without COMMAND: the config files read and every setting they make, per command.  With
    COMMAND [ARGS...]: every option of `rfmx COMMAND ARGS...` with its value and origin;
    nothing is read or run.

    \b
    Examples:
      rfmx config show
      rfmx config show clv --horizon 6
      rfmx --config jobs/nightly.toml config show alerts
    """
    failed = ctx.meta.pop(_META + ".error", None)
    if failed is not None:
        raise failed
    root = ctx.find_root()
    meta = ctx.meta.get(_META) or {"files": [], "origins": {}, "defaults": {}, "entries": {}}
    commands = configured_commands(root.command)
    if command is None:
        files = meta["files"]
        click.echo("config files: " + (", ".join(files) if files else
                                       f"none (no ./{PROJECT_FILE}, no [tool.rfmx] in ./{PYPROJECT})"))
        for section in [None, *commands]:
            rows = [(key, value, where) for (s, key), (value, where) in meta["entries"].items() if s == section]
            if rows:
                click.echo("top level (every command with the option)" if section is None else f"[{section}]")
                click.echo("\n".join(_lines(rows)))
        return
    if command not in commands:
        raise click.UsageError(f"no rfmx command '{command}' (one of {', '.join(commands)})")
    rows = effective_settings(ctx, commands[command], command, list(args))
    files = (ctx.meta.get(_META) or meta)["files"]
    click.echo(f"rfmx {command}: effective settings (config files: {', '.join(files) if files else 'none'})")
    click.echo("\n".join(_lines(rows)))

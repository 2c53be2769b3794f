"""``rfmx``: the command group.  Commands import rfmx's engine inside their bodies, so
``rfmx --help`` never imports Numba or compiles anything."""
from __future__ import annotations

import os
import sys

import click

from .aggregate import aggregate, demo
from .alerts import alerts
from .cluster import cluster
from .clv import clv
from .config import ConfigError, apply as apply_config, command_config_option, config_group
from .generate import generate
from .report import report
from .score import score
from .summary import summary
from .timeline import timeline


class OneLineErrors(click.Group):
    """A click group whose usage errors are one line too.

    Click prints a usage error as the usage, a hint and the error on three lines; rfmx
    promises one line per error (``Error: ...``), so scripts and logs read every failure
    the same way.  Usage errors keep click's exit code 2; rfmx's own errors exit 1.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"Error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="rfmx")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Settings from this TOML file instead of ./rfmx.toml and ./pyproject.toml [tool.rfmx].")
@click.pass_context
def main(ctx, config_file):
    """rfmx: exact, streaming RFM customer-value scoring.

    \b
    Quick start:  rfmx demo
    Settings every command shares (columns, time zone, segment map, ...) can live in
    ./rfmx.toml; see rfmx config show.
    """
    try:
        apply_config(ctx, config_file)
    except ConfigError as exc:
        # raised by the command's own --config check, after its --help had the chance to run
        ctx.meta["rfmx.config.error"] = exc


main.add_command(generate)
main.add_command(aggregate)
main.add_command(demo)
main.add_command(score)
main.add_command(summary)
main.add_command(cluster)
main.add_command(clv)
main.add_command(timeline)
main.add_command(alerts)
main.add_command(report)
for _command in list(main.commands.values()):
    command_config_option(_command)
main.add_command(config_group)


def run_guarded(fn, *args, **kwargs):
    """Call ``fn``; turn rfmx's input errors into a one-line message and a non-zero exit.

    While ``fn`` runs, SIGTERM/SIGHUP/SIGINT raise an exception instead of killing the
    process outright, so temporary files and the state lock are cleaned up first."""
    from rfmx.errors import RfmxError
    from rfmx.outputs import Terminated, signals_raise

    try:
        with signals_raise():
            return fn(*args, **kwargs)
    except RfmxError as exc:
        raise click.ClickException(str(exc)) from None
    except Terminated as exc:
        click.echo(f"rfmx: {exc}", err=True)
        raise SystemExit(128 + exc.signum) from None


def console_main() -> None:
    """The ``rfmx`` console script: :func:`main` in a process that ends as soon as it is done.

    A command's results are committed (files renamed into place, database transactions
    closed) and its output flushed before it returns; what is left is tearing down the
    interpreter, which with Numba, Arrow and their thread pools loaded takes ~0.15 s and
    does nothing for the user.  Tests and embedders call :func:`main`, which exits normally.
    """
    _skip_numba_blas_probe()
    code = 0
    try:
        main()
    except SystemExit as exc:
        if isinstance(exc.code, int):
            code = exc.code
        elif exc.code is not None:
            print(exc.code, file=sys.stderr)
            code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (rfmx ... | head): nothing more to say
            pass
    os._exit(code)


def _skip_numba_blas_probe() -> None:
    """Numba's first kernel load imports SciPy (when installed) only to find out whether
    ``np.dot`` can be compiled (``numba.np.arraymath._check_blas``).  rfmx's kernels use no
    BLAS (tests/test_kernel_cache.py checks), so in the console script's own process that one
    probe is answered "no" without importing SciPy (~0.1 s per command).  Any other import of
    SciPy goes through untouched, and embedding processes never see this."""
    class NoBlasProbe:  # a meta path finder (importlib.abc itself costs 15 ms to import)
        def find_spec(self, name, path=None, target=None):
            if name not in ("scipy", "scipy.linalg", "scipy.linalg.cython_blas"):
                return None
            probing = sys.modules.get("numba.np.arraymath")
            if probing is not None and not hasattr(probing, "_HAVE_BLAS"):  # arraymath is mid-import
                sys.meta_path.remove(self)
                raise ModuleNotFoundError(name)
            return None

    sys.meta_path.insert(0, NoBlasProbe())

"""``rfmx``: the command group.  Commands import rfmx's engine inside their bodies, so
``rfmx --help`` never imports Numba or compiles anything."""
from __future__ import annotations

import click

from .aggregate import aggregate, demo
from .cluster import cluster
from .clv import clv
from .generate import generate
from .score import score
from .summary import summary


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="rfmx")
def main():
    """rfmx: exact, streaming RFM customer-value scoring.

    Quick start:  rfmx demo
    """


main.add_command(generate)
main.add_command(aggregate)
main.add_command(demo)
main.add_command(score)
main.add_command(summary)
main.add_command(cluster)
main.add_command(clv)


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

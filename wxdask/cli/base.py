"""The command group and what every command shares: config loading, the stage runner, logging, errors."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from typing import Any, Callable

import click

from wxdask.errors import WxdaskError

logger = logging.getLogger("wxdask")


class _Group(click.Group):
    """Click group that turns a WxdaskError into one red line and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WxdaskError as exc:
            click.secho(f"error: {' '.join(str(exc).split())}", fg="red", err=True)
            ctx.exit(1)


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose < 0 else logging.INFO if verbose == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("wxdask").setLevel(level)
    import distributed  # noqa: F401 - configures its loggers on import; quiet them afterwards

    for noisy in ("distributed", "tornado", "asyncio", "botocore", "s3fs", "aiobotocore", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def cluster_options(func: Callable) -> Callable:
    """Options every stage command shares: config file, scheduler, report, verbosity."""

    @click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="YAML config file.")
    @click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override any config value.")
    @click.option(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="Existing Dask scheduler (tcp://host:8786); default: a LocalCluster.",
    )
    @click.option("--workers", "n_workers", type=int, default=None, help="Workers of the LocalCluster.")
    @click.option(
        "--performance-report",
        default=None,
        type=click.Path(dir_okay=False),
        help="Write a Dask performance report (HTML).",
    )
    @click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
    @click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
    @functools.wraps(func)
    def wrapper(*args: Any, config_path: str | None, overrides: tuple[str, ...], scheduler: str | None,
                n_workers: int | None, performance_report: str | None, verbose: int, quiet: bool, **kwargs: Any) -> Any:
        setup_logging(-1 if quiet else verbose)
        common = {
            "config_path": config_path,
            "overrides": list(overrides),
            "dask": {"scheduler": scheduler, "n_workers": n_workers, "performance_report": performance_report},
        }
        return func(*args, common=common, **kwargs)

    return wrapper


def load_config(common: dict, **sections: dict) -> Any:
    """Config from ``--config``, then ``--set`` overrides, then the command's own options.

    The one place the CLI builds a config: one :meth:`Config.from_yaml` call, so
    every value is parsed and validated once (the command's options are only
    ``section.key`` overrides applied last).
    """
    from wxdask.config import Config

    merged = {"dask": common["dask"], **sections}
    options = {f"{sec}.{key}": value for sec, values in merged.items() for key, value in values.items()}
    return Config.from_yaml(common["config_path"], common["overrides"], options)


def run_stage(stage_run: Callable, cfg: Any, *, write: bool = True) -> Any:
    """Check the store, take its write lease, make the client, run one stage under monitoring.

    Every command that writes the store runs through here (``write=True``), so
    each holds the store's lease (:mod:`wxdask.lease`) for its whole run and a
    second writer is refused at once, naming the first; read-only commands pass
    ``write=False`` and take none. The lease and the client are released also
    when the stage fails. A scheduler lost mid-run becomes a
    :class:`~wxdask.errors.ClusterError` naming its address (one red line, exit
    1), not a traceback.
    """
    from wxdask import store
    from wxdask.client import (
        check_report_path,
        close_client,
        make_client,
        monitored,
        scheduler_guard,
    )
    from wxdask.lease import StoreLease

    store.check_location(cfg.store, write=write)
    if cfg.dask.performance_report:
        check_report_path(cfg.dask.performance_report)
    ctx = click.get_current_context(silent=True)
    command = f"wxdask {ctx.info_name}" if ctx is not None else "wxdask"  # the name, never the arguments
    with contextlib.ExitStack() as stack:
        if write:
            stack.enter_context(StoreLease(cfg.store, command))
        client = make_client(cfg.dask)
        try:
            with scheduler_guard(client), monitored(cfg.dask, client):
                return stage_run(cfg, client)
        finally:
            close_client(client)


@click.group(cls=_Group)
@click.version_option(package_name="wxdask")
def main() -> None:
    """wxdask: HRRR radar archives to searchable, clusterable embeddings, on Dask."""
    # TensorFlow's C++ start-up notes (oneDNN, absl) are not for the user; this process's workers inherit it
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@main.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE")
def config_show(config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Print the effective configuration as YAML (credentials shown as ***)."""
    import yaml

    from wxdask.config import Config

    cfg = Config.from_yaml(config_path, list(overrides))
    click.echo(yaml.safe_dump(cfg.to_dict(redact=True), sort_keys=False))

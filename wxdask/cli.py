"""The ``wxdask`` command: one sub-command per stage, plus ``run``, ``demo`` and tools.

Each stage command loads the config (``--config`` YAML plus its options as
overrides), gets a Dask client, calls ``<stage>.run(cfg, client)`` and echoes
where the result went. A :class:`~wxdask.errors.WxdaskError` becomes one red
line on stderr and exit status 1; anything else keeps its traceback.
Heavy imports stay inside the commands.
"""

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


def _setup_logging(verbose: int) -> None:
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
        _setup_logging(-1 if quiet else verbose)
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


@main.command()
@click.option("--start", default=None, help="First initialisation time, e.g. 2019-09-20T00 (UTC).")
@click.option("--end", default=None, help="End time, exclusive.")
@click.option("--leads", default=None, help="Forecast leads in hours, e.g. 0,1,2 (default 0).")
@click.option("--store", "store_url", default=None, help="Zarr store path or URL.")
@click.option("--source", default=None, help="Archive root (default s3://noaa-hrrr-bdp-pds) or a local directory.")
@click.option("--endpoint-url", default=None, help="S3 endpoint of the source (default: AWS).")
@click.option("--retry", default=None, metavar="STATUS,...|all",
              help="Fetch slots of these statuses again even if unchanged (failed ones always are).")
@cluster_options
def ingest(start: str | None, end: str | None, leads: str | None, store_url: str | None, source: str | None,
           endpoint_url: str | None, retry: str | None, common: dict) -> None:
    """Read HRRR REFC from the archive into the Zarr store (resumable)."""
    from wxdask import ingest as stage

    cfg = load_config(
        common,
        store={"url": store_url},
        ingest={
            "start": start,
            "end": end,
            "leads": leads,
            "source": source,
            "endpoint_url": endpoint_url,
            "retry": retry,
        },
    )
    click.echo(run_stage(stage.run, cfg))


@main.command("status")
@click.option("--store", "store_url", required=True, help="Zarr store path or URL (made by ingest).")
@click.option("--status", "status", default=None, help="List only slots of this status (default: every slot not ok).")
@click.option("--format", "fmt", default="table", help="table, csv or json.")
def status_command(store_url: str, status: str | None, fmt: str) -> None:
    """List the store's slots that are not ok, with their reasons, and the totals."""
    from wxdask import ingest as stage
    from wxdask.config import StoreConfig

    listing, totals = stage.status_report(StoreConfig(url=store_url), status, fmt)
    click.echo(listing)
    if fmt == "csv":
        click.echo(totals, err=True)


@main.command()
@click.option("--store", "store_url", default=None, help="Zarr store path or URL (holding refc).")
@click.option(
    "--model", "model_dir", default=None, type=click.Path(), help="Model directory (created; resumed when rerun)."
)
@click.option(
    "--epochs", type=int, default=None, help="Total epochs (a rerun with more continues from the checkpoint)."
)
@click.option("--batch-size", type=int, default=None, help="Images per training batch.")
@click.option(
    "--gpu-worker/--local", "on_gpu_worker", default=None, help="Train as a task on a GPU worker, or in this process."
)
@click.option("--tiles", is_flag=True, help="Train the tile model (tiles with echo; --model default tiles.model_dir).")
@cluster_options
def train(store_url: str | None, model_dir: str | None, epochs: int | None, batch_size: int | None,
          on_gpu_worker: bool | None, tiles: bool, common: dict) -> None:
    """Train the autoencoder on the store's training days (held-out days kept aside)."""
    if tiles:
        from wxdask import tile_model

        cfg = load_config(common, store={"url": store_url}, train={"on_gpu_worker": on_gpu_worker},
                          tiles={"model_dir": model_dir, "epochs": epochs, "batch_size": batch_size})
        click.echo(run_stage(tile_model.run_train, cfg))
        return
    from wxdask import train as stage

    cfg = load_config(common, store={"url": store_url}, train={
        "model_dir": model_dir, "epochs": epochs, "batch_size": batch_size, "on_gpu_worker": on_gpu_worker})
    click.echo(run_stage(stage.run, cfg, write=False))  # reads the store; writes only the model directory


@main.command()
@click.option("--store", "store_url", default=None, help="Zarr store path or URL (the one the model was trained on).")
@click.option("--model", "model_dir", default=None, type=click.Path(), help="Trained model directory.")
@click.option(
    "--tiles", is_flag=True, help="Score the tile model on held-out tiles with echo (--model default tiles.model_dir)."
)
@cluster_options
def evaluate(store_url: str | None, model_dir: str | None, tiles: bool, common: dict) -> None:
    """Score the model on its held-out days against a PCA baseline; write scores and a PNG."""
    if tiles:
        from wxdask import tile_evaluate

        cfg = load_config(common, store={"url": store_url}, tiles={"model_dir": model_dir})
        click.echo(run_stage(tile_evaluate.run, cfg))
        return
    from wxdask import evaluate as stage

    cfg = load_config(common, store={"url": store_url}, train={"model_dir": model_dir},
                      evaluate={"model_dir": model_dir})
    click.echo(run_stage(stage.run, cfg))


@main.command("embed")
@click.option("--store", "store_url", default=None, help="Zarr store path or URL (holding refc).")
@click.option("--model", "model_dir", default=None, type=click.Path(), help="Trained model directory.")
@click.option("--batch-size", type=int, default=None, help="Images per encoder call.")
@click.option(
    "--images-per-task", type=int, default=None, help="Images per Dask task (sets the embedding's time chunks)."
)
@click.option(
    "--tiles", is_flag=True, help="Embed the tiles with echo into tile_embedding (--model default tiles.model_dir)."
)
@cluster_options
def embed_command(store_url: str | None, model_dir: str | None, batch_size: int | None,
                  images_per_task: int | None, tiles: bool, common: dict) -> None:
    """Embed every image not embedded yet, on GPU workers when the cluster has them."""
    if tiles:
        from wxdask import tile_embed

        cfg = load_config(common, store={"url": store_url}, tiles={"model_dir": model_dir, "batch_size": batch_size},
                          embed={"images_per_task": images_per_task})
        click.echo(run_stage(tile_embed.run, cfg))
        return
    from wxdask import embed as stage

    cfg = load_config(common, store={"url": store_url}, embed={
        "model_dir": model_dir, "batch_size": batch_size, "images_per_task": images_per_task})
    click.echo(run_stage(stage.run, cfg))


@main.command("decode")
@click.option("--store", "store_url", default=None, help="Zarr store path or URL (holding embedding).")
@click.option("--model", "model_dir", default=None, type=click.Path(), help="The model that made the embeddings.")
@click.option(
    "--time",
    "time_",
    default=None,
    help="Decode this slot to a PNG (e.g. 2019-09-20T05); without it, score the whole store.",
)
@click.option("--lead", type=int, default=None, help="Lead hour of the slot (default: the first embedded one).")
@click.option(
    "--out", default=None, type=click.Path(dir_okay=False), help="PNG of original vs decoded (implies one slot)."
)
@click.option("--batch-size", type=int, default=None, help="Embeddings per decoder call.")
@cluster_options
def decode_command(store_url: str | None, model_dir: str | None, time_: str | None, lead: int | None,
                   out: str | None, batch_size: int | None, common: dict) -> None:
    """Decode one embedding to a PNG, or write reconstruction RMSE and compression ratios for all."""
    from wxdask import decode as stage

    cfg = load_config(common, store={"url": store_url}, decode={"model_dir": model_dir, "batch_size": batch_size})
    if time_ is None and lead is None and out is None:
        click.echo(run_stage(stage.run, cfg))
    else:
        click.echo(stage.decode_png(cfg, time_, lead, out))


@main.command("run")
@click.option("--stages", default=None, help="Comma-separated stages to run (default: all, in order).")
@cluster_options
def run_all(stages: str | None, common: dict) -> None:
    """Run every stage from one config file; a rerun resumes from what the store holds."""
    from wxdask import pipeline

    names = pipeline.parse_stages(stages)
    cfg = load_config(common)
    results = run_stage(lambda c, client: pipeline.run(c, client, names), cfg)
    for name, text in results.items():
        click.echo(f"== {name}\n{text}")


@main.command("search")
@click.option("--store", "store_url", default=None, help="Zarr store path or URL (holding embedding).")
@click.option("-k", "k", type=int, default=None, help="Neighbours per slot (default 10).")
@click.option("--exclude-window", default=None, help="Drop slots within this time of the query, e.g. 24h (default), 0.")
@click.option("--lead", type=int, default=None, help="Search this lead only (default: all slots together).")
@click.option("--block-size", type=int, default=None, help="Queries per task.")
@click.option(
    "--time", "time_", default=None, help="Answer one query: this slot (e.g. 2019-09-20T05), printed as a table."
)
@click.option("--query-lead", type=int, default=None, help="Lead of the --time slot (default: --lead, else the first).")
@click.option(
    "--image",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Answer one query: this image (GRIB2 file with REFC, or .npy of dBZ), encoded with the model.",
)
@click.option(
    "--model",
    "model_dir",
    default=None,
    type=click.Path(),
    help="Model for --image and pictures (default: the embedding's).",
)
@click.option(
    "--plot",
    default=None,
    type=click.Path(dir_okay=False),
    help="With --time/--image: PNG of the query beside its neighbours.",
)
@click.option("--tiles", is_flag=True, help="Search tiles (tile_embedding) instead of whole images.")
@click.option(
    "--same-place/--anywhere",
    "same_place",
    default=None,
    help="With --tiles: compare tiles of the same place only (default), or every tile with every tile.",
)
@click.option(
    "--lat", type=float, default=None, help="With --tiles --time/--image: latitude of the query tile's point."
)
@click.option(
    "--lon", type=float, default=None, help="With --tiles --time/--image: longitude of the query tile's point."
)
@cluster_options
def search_command(store_url: str | None, k: int | None, exclude_window: str | None, lead: int | None,
                   block_size: int | None, time_: str | None, query_lead: int | None, image: str | None,
                   model_dir: str | None, plot: str | None, tiles: bool, same_place: bool | None,
                   lat: float | None, lon: float | None, common: dict) -> None:
    """All-pairs nearest neighbours of every slot, or the neighbours of one time or image."""
    from wxdask import query as queries
    from wxdask import search as stage

    if tiles:
        _search_tiles(common, store_url, k, exclude_window, lead, block_size, time_, query_lead, image, model_dir,
                      plot, same_place, lat, lon)
        return
    if same_place is not None or lat is not None or lon is not None:
        raise click.UsageError("--same-place/--anywhere/--lat/--lon need --tiles")
    cfg = load_config(common, store={"url": store_url}, search={
        "k": k, "exclude_window": exclude_window, "lead": lead, "block_size": block_size, "model_dir": model_dir})
    if time_ is None and image is None:
        if plot:
            raise click.UsageError("--plot needs a single query (--time or --image)")
        click.echo(run_stage(stage.run, cfg))
        return

    def one(c: Any, client: Any) -> str:
        result = queries.query(c, client, time=time_, lead=query_lead, image=image)
        text = queries.format_table(result)
        if plot:
            text += f"\nwrote {queries.plot_query(c, result, plot)}"
        return text

    click.echo(run_stage(one, cfg, write=False))


def _search_tiles(common: dict, store_url: str | None, k: int | None, exclude_window: str | None, lead: int | None,
                  block_size: int | None, time_: str | None, query_lead: int | None, image: str | None,
                  model_dir: str | None, plot: str | None, same_place: bool | None, lat: float | None,
                  lon: float | None) -> None:
    """``search --tiles``: every tile, or one tile by --time/--image and --lat/--lon."""
    from wxdask import tile_search

    cfg = load_config(common, store={"url": store_url}, search={"block_size": block_size, "model_dir": model_dir},
                      tiles={"k": k, "exclude_window": exclude_window,
                             "anywhere": None if same_place is None else not same_place})
    if time_ is None and image is None:
        if plot or lat is not None or lon is not None or lead is not None:
            raise click.UsageError("--plot, --lat, --lon and --lead need a single query (--time or --image)")
        click.echo(run_stage(tile_search.run, cfg))
        return
    if lat is None or lon is None:
        raise click.UsageError("a single tile query needs --lat and --lon (a point of the query tile)")

    def one(c: Any, client: Any) -> str:
        result = tile_search.query_tile(c, client, time=time_, lead=query_lead if query_lead is not None else lead,
                                        image=image, lat=lat, lon=lon)
        text = tile_search.format_tile_table(result)
        if plot:
            text += f"\nwrote {tile_search.plot_tile_query(c, result, plot)}"
        return text

    click.echo(run_stage(one, cfg))


@main.command("interpolate")
@click.option("--store", "store_url", default=None, help="Zarr store path or URL (holding embedding).")
@click.option(
    "--n-decode", type=int, default=None, help="Slots whose interpolation is decoded and scored in dBZ (default 4)."
)
@click.option(
    "--model",
    "model_dir",
    default=None,
    type=click.Path(),
    help="Model whose decoder scores them (default: the embedding's).",
)
@click.option("--plot", default=None, type=click.Path(dir_okay=False), help="PNG of residual and step over time.")
@cluster_options
def interpolate_command(store_url: str | None, n_decode: int | None, model_dir: str | None, plot: str | None,
                        common: dict) -> None:
    """Interpolation residuals between neighbouring hours, and their median ratio to the hourly step."""
    from wxdask import interpolate as stage

    cfg = load_config(common, store={"url": store_url},
                      interpolate={"n_decode": n_decode, "model_dir": model_dir, "plot": plot})
    click.echo(run_stage(stage.run, cfg))
    click.echo(stage.summary(cfg))
    if plot:
        click.echo(f"wrote {plot}")


@main.command("cluster")
@click.option("--store", "store_url", default=None, help="Zarr store path or URL (holding embedding).")
@click.option("-k", "k", type=int, default=None, help="Number of clusters (default 5).")
@click.option("--lead", type=int, default=None, help="Cluster this lead only (default: all slots).")
@click.option("--engine", type=click.Choice(["lloyd", "dask-ml"]), default=None,
              help="Lloyd iterations on Dask arrays (default) or dask-ml's KMeans; both k-means||.")
@click.option("--max-iter", type=int, default=None, help="Lloyd iterations at most.")
@click.option("--seed", type=int, default=None, help="Random state.")
@click.option("--model", "model_dir", default=None, type=click.Path(), help="Model whose decoder draws the centroids.")
@click.option(
    "--plot",
    default=None,
    type=click.Path(dir_okay=False),
    help="PNG of the decoded centroids (default: beside the store).",
)
@click.option("--tiles", is_flag=True, help="Regimes of tiles (tile_embedding) instead of whole images.")
@click.option("--plot-map", "plot_map", default=None, metavar="TIME",
              help="With --tiles: also a PNG map of TIME's image (<store>-tile-regimes-TIME.png), each tile outlined "
                   "in its regime's colour (--lead: its lead).")
@cluster_options
def cluster_command(store_url: str | None, k: int | None, lead: int | None, engine: str | None,
                    max_iter: int | None, seed: int | None, model_dir: str | None, plot: str | None,
                    tiles: bool, plot_map: str | None, common: dict) -> None:
    """K-means weather regimes of every embedded slot, with sizes, monthly counts and centroid maps."""
    from wxdask import kmeans as stage

    if tiles:
        from wxdask import tile_regimes

        cfg = load_config(common, store={"url": store_url}, tiles={"n_clusters": k}, kmeans={
            "max_iter": max_iter, "seed": seed, "model_dir": model_dir})

        def regimes(c: Any, client: Any) -> str:
            text = tile_regimes.run(c, client, plot=plot)
            if plot_map is not None:
                wrote = tile_regimes.plot_regime_map(c, plot_map, tile_regimes.map_path(c, plot_map), lead=lead)
                text += f"\nwrote {wrote}"
            return text

        click.echo(run_stage(regimes, cfg))
        return
    if plot_map is not None:
        raise click.UsageError("--plot-map needs --tiles")
    cfg = load_config(common, store={"url": store_url}, kmeans={
        "k": k, "lead": lead, "engine": engine, "max_iter": max_iter, "seed": seed, "model_dir": model_dir,
        "plot": plot})
    click.echo(run_stage(stage.run, cfg))
    click.echo(stage.format_sizes(cfg))


@main.command()
@click.option(
    "--out", default="wxdask-demo", type=click.Path(file_okay=False), help="Directory for everything the demo writes."
)
@click.option(
    "--days", default=14, type=click.IntRange(3, 120), help="Days of hourly analyses in the synthetic archive."
)
@click.option("--seed", default=0, type=int, help="Seed of the synthetic weather.")
@click.option("--workers", default=2, type=click.IntRange(1, 64), help="Workers of the LocalCluster.")
@click.option("-v", "--verbose", count=True, help="More logging.")
def demo(out: str, days: int, seed: int, workers: int, verbose: int) -> None:
    """Synthetic archive on a local S3 endpoint, through every stage, on a LocalCluster."""
    from wxdask import demo as demo_module

    _setup_logging(verbose)
    click.echo(demo_module.run(out, days=days, seed=seed, n_workers=workers))


@main.command("serve-archive")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--port", default=0, type=int, help="Port on 127.0.0.1 (default: a free one).")
def serve_archive(directory: str, port: int) -> None:
    """Serve a synthetic archive DIRECTORY on a local S3 endpoint until stopped."""
    import threading

    from wxdask.s3local import ARCHIVE_BUCKET, LocalS3

    _setup_logging(0)
    with LocalS3(port=port) as s3:
        n = s3.upload_archive(directory)
        click.echo(f"serving {n} objects as s3://{ARCHIVE_BUCKET} at {s3.endpoint_url}")
        click.echo(f"  wxdask ingest --source s3://{ARCHIVE_BUCKET} --endpoint-url {s3.endpoint_url} ...")
        click.echo("press Ctrl-C to stop")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            click.echo("stopped")


@main.command("synth")
@click.option("--start", required=True, help="First initialisation time, e.g. 2019-09-20T00 (UTC).")
@click.option("--end", required=True, help="End time, exclusive.")
@click.option("--leads", default="0", show_default=True, help="Forecast leads in hours, e.g. 0,1.")
@click.option(
    "--grid", "grid_name", default="coarse", show_default=True, help="hrrr (1059x1799, 3 km) or coarse (66x112, 48 km)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic weather.")
@click.option("--missing", default=None, metavar="T[/L],...", help="Slots left out (a time alone: all its leads).")
@click.option("--missing-idx", default=None, metavar="T[/L],...", help="Slots written without their .idx.")
@click.option(
    "--corrupt", default=None, metavar="T[/L][=garbage|truncated],...", help="Slots whose REFC message is damaged."
)
@click.option("--old-label", is_flag=True, help="Write the older REFC level label in the .idx files.")
@click.option("--out", required=True, help="Directory (files under DIR/noaa-hrrr-bdp-pds/) or s3://bucket[/prefix].")
@click.option("--endpoint-url", default=None, help="S3 endpoint for an s3:// --out (default: AWS).")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def synth_command(start: str, end: str, leads: str, grid_name: str, seed: int, missing: str | None,
                  missing_idx: str | None, corrupt: str | None, old_label: bool, out: str,
                  endpoint_url: str | None, verbose: int, quiet: bool) -> None:
    """Write a synthetic HRRR archive (GRIB2 + .idx, the noaa-hrrr-bdp-pds layout)."""
    import os

    from wxdask import synth

    _setup_logging(-1 if quiet else verbose)
    storage_options: dict[str, Any] | None = None
    if out.startswith("s3://"):
        storage_options = {"s3_additional_kwargs": {"ACL": "public-read"}}
        if endpoint_url:
            storage_options["client_kwargs"] = {"endpoint_url": endpoint_url}
            if not os.environ.get("AWS_ACCESS_KEY_ID"):
                # A local endpoint (moto) checks no signature but botocore wants some credentials.
                storage_options.update(key="wxdask-local", secret="wxdask-local")
    keys = synth.write_archive(out, start, end, leads, grid=grid_name, seed=seed, missing=missing or (),
                               missing_idx=missing_idx or (), corrupt=corrupt or (), old_label=old_label,
                               storage_options=storage_options)
    where = out if out.startswith("s3://") else os.path.join(out, synth.BUCKET)
    n_grib = sum(not k.endswith(".idx") for k in keys)
    click.echo(f"wrote {n_grib} GRIB2 files and {len(keys) - n_grib} .idx files under {where}")


@main.command("explore")
@click.option("--store", "store_url", required=True, help="The Zarr store (opened read-only).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (loopback unless told).")
@click.option("--port", default=8050, show_default=True, type=int, help="Port (0: a free one).")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def explore_command(store_url: str, host: str, port: int, verbose: int) -> None:
    """Serve a read-only analog explorer for STORE in the browser (prints its URL)."""
    from wxdask import explore

    _setup_logging(verbose)
    explore.serve(store_url, host, port, on_ready=lambda url: click.echo(f"wxdask explorer at {url} (Ctrl-C stops)"))


if __name__ == "__main__":  # pragma: no cover
    main()

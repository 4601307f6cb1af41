"""``search``, ``interpolate`` and ``cluster``: analytics over the embeddings (whole images or tiles)."""

from __future__ import annotations

from typing import Any

import click

from wxdask.cli.base import cluster_options, load_config, main, run_stage


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
    from wxdask import tile_query, tile_search

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
        result = tile_query.query_tile(c, client, time=time_, lead=query_lead if query_lead is not None else lead,
                                        image=image, lat=lat, lon=lon)
        text = tile_query.format_tile_table(result)
        if plot:
            text += f"\nwrote {tile_query.plot_tile_query(c, result, plot)}"
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

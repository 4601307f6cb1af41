"""``wxdask ingest`` and ``wxdask status``: the archive into the store, and what did not come."""

from __future__ import annotations

import click

from wxdask.cli.base import cluster_options, load_config, main, run_stage


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

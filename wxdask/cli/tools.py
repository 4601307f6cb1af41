"""``demo``, ``serve-archive``, ``synth`` and ``explore``: tools around the stages."""

from __future__ import annotations

from typing import Any

import click

from wxdask.cli.base import main, setup_logging


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

    setup_logging(verbose)
    click.echo(demo_module.run(out, days=days, seed=seed, n_workers=workers))


@main.command("serve-archive")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--port", default=0, type=int, help="Port on 127.0.0.1 (default: a free one).")
def serve_archive(directory: str, port: int) -> None:
    """Serve a synthetic archive DIRECTORY on a local S3 endpoint until stopped."""
    import threading

    from wxdask.s3local import ARCHIVE_BUCKET, LocalS3

    setup_logging(0)
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
    from wxdask.config.parse import parse_endpoint_url

    setup_logging(-1 if quiet else verbose)
    parse_endpoint_url(endpoint_url, "--endpoint-url")
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

    setup_logging(verbose)
    explore.serve(store_url, host, port, on_ready=lambda url: click.echo(f"wxdask explorer at {url} (Ctrl-C stops)"))

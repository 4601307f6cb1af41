"""``wxdask demo``: a synthetic HRRR archive on a local S3 endpoint, through every stage.

It writes a small archive (coarse grid, a couple of weeks, with a missing
hour and a corrupt message), serves it from a real S3 server on loopback,
and runs the whole pipeline on a LocalCluster exactly as on real data. Then it
reports where the results are and what they say.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import xarray as xr

from wxdask.config import Config

__all__ = ["demo_config", "run"]

logger = logging.getLogger(__name__)

START = "2019-06-01T00"


def demo_config(out: Path, endpoint_url: str, days: int, seed: int, n_workers: int, k: int) -> Config:
    """The demo's configuration: everything under ``out``, the archive at ``endpoint_url``."""
    end = str(np.datetime64(START, "h") + 24 * days)
    return Config.from_dict({
        "store": {"url": str(out / "demo.zarr")},
        "dask": {"n_workers": n_workers, "threads_per_worker": 1},
        "ingest": {"start": START, "end": end, "leads": [0], "endpoint_url": endpoint_url},
        "train": {"model_dir": str(out / "model"), "epochs": 30, "batch_size": 16, "seed": seed},
        "embed": {"images_per_task": 64},
        "search": {"k": 5, "exclude_window": "24h"},
        "kmeans": {"k": k, "seed": seed, "plot": str(out / "centroids.png")},
    })


def run(out: str | Path = "wxdask-demo", *, days: int = 14, seed: int = 0, n_workers: int = 2) -> str:
    """Run the demo; return a report of where everything is and what it shows.

    Parameters
    ----------
    out : str or Path
        Directory for the archive, the store, the model and the pictures.
    days : int
        Days of hourly analyses in the synthetic archive.
    seed : int
        Seed of the synthetic weather.
    n_workers : int
        Workers of the LocalCluster.
    """
    from wxdask import pipeline, synth
    from wxdask.client import close_client, make_client
    from wxdask.s3local import LocalS3

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    times = np.arange(np.datetime64(START, "h"), np.datetime64(START, "h") + 24 * days)
    regimes = synth.regime_of(seed, times)
    missing = [times[30]]
    corrupt = [(times[40], 0, "garbage")]
    archive = out / "archive"
    logger.info("writing a synthetic archive of %d hours to %s", len(times), archive)
    synth.write_archive(str(archive), START, str(times[-1] + 1), (0,), grid="coarse", seed=seed,
                        missing=missing, corrupt=corrupt)
    report = [f"synthetic archive: {archive} ({len(times)} hours, coarse grid, "
              f"true regimes {sorted(set(regimes.tolist()))}; one hour left out, one message corrupted)"]

    with LocalS3() as s3:
        s3.upload_archive(archive)
        report.append(f"served from a local S3 endpoint at {s3.endpoint_url} as s3://noaa-hrrr-bdp-pds")
        assert s3.endpoint_url is not None  # set on entering LocalS3
        cfg = demo_config(out, s3.endpoint_url, days, seed, n_workers, k=len(set(regimes.tolist())))
        client = make_client(cfg.dask)
        try:
            report.append(f"Dask dashboard: {client.dashboard_link}")
            results = pipeline.run(cfg, client)
            report += [f"\n== {name}\n{text}" for name, text in results.items()]
            report.append("\n== pictures and tables")
            report += _extras(cfg, client, times, regimes, out)
        finally:
            close_client(client)
    report.append(f"\nstore: {cfg.store.url}  (xarray.open_zarr({cfg.store.url!r}))")
    report.append(f"model: {cfg.train.model_dir}")
    report.append(f"explore it in the browser: wxdask explore --store {cfg.store.url}")
    return "\n".join(report)


def _extras(cfg: Config, client, times: np.ndarray, regimes: np.ndarray, out: Path) -> list[str]:
    """Query table, pictures, interpolation summary, cluster sizes and agreement with the truth."""
    from wxdask import decode, interpolate, kmeans, query

    query_time = times[len(times) // 2]
    lines = []
    lines.append(f"decoded vs original: {decode.decode_png(cfg, query_time, 0, str(out / 'decoded.png'))}")
    result = query.query(cfg, client, time=query_time, lead=0)
    lines.append(f"analogs of {np.datetime_as_string(query_time, unit='h')} (not within 24 h):")
    lines.append(query.format_table(result))
    lines.append(f"query and analogs: {query.plot_query(cfg, result, str(out / 'analogs.png'))}")
    lines.append(interpolate.summary(cfg))
    lines.append(f"residual and step over time: {interpolate.plot_residuals(cfg, str(out / 'interpolation.png'))}")
    lines.append(kmeans.format_sizes(cfg))
    truth = xr.DataArray(regimes[:, None], dims=("time", "lead_time"),
                         coords={"time": times.astype("datetime64[ns]"), "lead_time": [0]})
    lines.append(f"adjusted Rand index of clusters against the true regimes: {kmeans.adjusted_rand(cfg, truth):.3f}")
    return lines

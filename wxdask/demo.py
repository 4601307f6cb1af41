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
        "tiles": {"model_dir": str(out / "tile-model"), "epochs": 8, "anywhere": True, "k": 5, "n_clusters": k},
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
            report.append("\n== tiles (8 px = 384 km on the coarse grid)")
            report += _tiles(cfg, client, times, out)
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
    ari, ari_pca = kmeans.adjusted_rand(cfg, truth), _pca_rand(cfg, client, truth)
    lines.append(f"adjusted Rand index of clusters against the true regimes: {ari:.3f} "
                 f"(the same k-means on PCA-{cfg.model.n_latent} scores of the images: {ari_pca:.3f})")
    return lines


def _pca_rand(cfg: Config, client, truth: xr.DataArray) -> float:
    """Adjusted Rand index of the same k-means on PCA scores (as many as the embedding) of the images."""
    import dask.array as da
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    from wxdask import kmeans, store
    from wxdask.model import scale_input

    ds = store.open_store(cfg.store)
    ok = store.ok_mask(ds)[:, 0]
    x = scale_input(ds["refc"].values[ok, 0], cfg.model.clip_max).reshape(int(ok.sum()), -1)
    scores = PCA(min(cfg.model.n_latent, *x.shape), random_state=cfg.kmeans.seed).fit_transform(x).astype(np.float32)
    fit = kmeans.fit(da.from_array(scores, chunks=(4096, -1)), cfg.kmeans, client)
    labels, _ = kmeans.assign_block(scores, fit.centers)
    return float(adjusted_rand_score(truth.values[ok, 0], labels))


def _tiles(cfg: Config, client, times: np.ndarray, out: Path) -> list[str]:
    """Tile model, tile embeddings, tile analogs anywhere of the stormiest tile, and the tile regime map."""
    from wxdask import store, tile_embed, tile_model, tile_query, tile_regimes, tile_search

    lines = [tile_model.run_train(cfg, client), tile_embed.run(cfg, client), tile_search.run(cfg, client),
             tile_regimes.run(cfg, client, plot=str(out / "tile-centroids.png"))]
    ds = store.open_store(cfg.store)
    echo = ds["tile_echo_fraction"].isel(lead_time=0)
    t, ty, tx = np.unravel_index(int(np.nanargmax(echo.values)), echo.shape)
    when = ds["time"].values[t]
    lat, lon = float(ds["tile_latitude"].values[ty, tx]), float(ds["tile_longitude"].values[ty, tx])
    result = tile_query.query_tile(cfg, client, lat=lat, lon=lon, time=when, lead=0)
    lines.append(f"analogs anywhere of the stormiest tile, {np.datetime_as_string(when, unit='h')} at "
                 f"{lat:.1f}N {abs(lon):.1f}{'W' if lon < 0 else 'E'}:")
    lines.append(tile_query.format_tile_table(result))
    lines.append(f"query tile and analogs: {tile_query.plot_tile_query(cfg, result, str(out / 'tile-analogs.png'))}")
    lines.append(f"tile regimes at that time: "
                 f"{tile_regimes.plot_regime_map(cfg, when, str(out / 'tile-regimes.png'), lead=0)}")
    return lines

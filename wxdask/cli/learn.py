"""``train``, ``evaluate``, ``embed``, ``decode`` and ``run`` (every stage from one config)."""

from __future__ import annotations

import click

from wxdask.cli.base import cluster_options, load_config, main, run_stage


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

"""What the GPU benchmark drivers share: timestamped output, the device check, a fresh work folder."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

T0 = time.perf_counter()


def say(msg: str) -> None:
    """Print with the seconds since the driver started."""
    print(f"[{time.perf_counter() - T0:6.1f} s] {msg}", flush=True)


def start(workdir: str, allow_cpu: bool) -> Path | None:
    """Logging, the jax device check (``None`` when there is no GPU and no ``--allow-cpu``), an empty ``workdir``."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("wxdask").setLevel(logging.INFO)
    import jax
    import keras

    devices = jax.devices()
    say(f"keras {keras.__version__} backend {keras.backend.backend()}, jax {jax.__version__} devices {devices}")
    if devices[0].platform != "gpu" and not allow_cpu:
        print("no GPU visible to jax (use --allow-cpu for a dry run)", file=sys.stderr)
        return None
    work = Path(workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return work

"""A real S3 endpoint on loopback (moto's server), standing in for AWS.

The server speaks the S3 protocol over HTTP on ``127.0.0.1``; wxdask reads it
with the same s3fs code as the public bucket, only ``endpoint_url`` differs.
Like ``noaa-hrrr-bdp-pds``, buckets made here are public-read, so readers use
``anon=True``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from wxdask.errors import SourceNotFoundError

__all__ = ["LocalS3", "ARCHIVE_BUCKET"]

logger = logging.getLogger(__name__)

#: Bucket name of the HRRR archive on AWS, reused by the local endpoint.
ARCHIVE_BUCKET = "noaa-hrrr-bdp-pds"

# moto signs nothing, but botocore wants some credentials for writes.
_WRITER_CREDENTIALS = {"key": "wxdask-local", "secret": "wxdask-local"}


class LocalS3:
    """Start and stop a moto S3 server on loopback.

    Parameters
    ----------
    port : int
        Port to bind; 0 picks a free one.

    Examples
    --------
    >>> with LocalS3() as s3:                         # doctest: +SKIP
    ...     s3.upload_archive("demo-archive")
    ...     s3.endpoint_url
    'http://127.0.0.1:40123'
    """

    def __init__(self, port: int = 0) -> None:
        from moto.server import ThreadedMotoServer

        # moto needs a region; never let it reach for real AWS credentials.
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint_url: str | None = None

    def start(self) -> LocalS3:
        """Start serving, with no buckets; sets :attr:`endpoint_url`.

        moto keeps its buckets in one store per process, shared by every server
        started in it, so starting one empties that store.
        """
        import urllib.request

        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")).close()
        logger.info("local S3 endpoint at %s", self.endpoint_url)
        return self

    def stop(self) -> None:
        """Stop the server (its buckets are gone)."""
        self._server.stop()

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def reader_options(self) -> dict:
        """s3fs options for anonymous reads, as from the public bucket."""
        return {"anon": True, "client_kwargs": {"endpoint_url": self.endpoint_url}}

    def writer_options(self, public: bool = True) -> dict:
        """s3fs options for writes; objects are public-read when ``public``."""
        opts: dict = {**_WRITER_CREDENTIALS, "client_kwargs": {"endpoint_url": self.endpoint_url}}
        if public:
            opts["s3_additional_kwargs"] = {"ACL": "public-read"}
        return opts

    def create_bucket(self, name: str, public: bool = True) -> None:
        """Create a bucket (public-read when ``public``); existing buckets are kept."""
        import s3fs

        fs = s3fs.S3FileSystem(**self.writer_options(public), skip_instance_cache=True)
        if not fs.exists(name):
            fs.mkdir(name, acl="public-read" if public else "private")

    def upload_archive(self, directory: str | Path, bucket: str = ARCHIVE_BUCKET) -> int:
        """Upload a synthetic archive directory into ``bucket``, public-read.

        Parameters
        ----------
        directory : str or Path
            Either the bucket directory itself (holding ``hrrr.YYYYMMDD/``) or its
            parent holding ``noaa-hrrr-bdp-pds/``, as ``wxdask synth`` writes.

        Returns
        -------
        int
            Number of objects uploaded.

        Raises
        ------
        SourceNotFoundError
            If the directory holds no ``hrrr.*`` folders.
        """
        import s3fs

        root = Path(directory)
        if (root / bucket).is_dir():
            root = root / bucket
        files = sorted(p for p in root.glob("hrrr.*/**/*") if p.is_file())
        if not files:
            raise SourceNotFoundError(f"no hrrr.YYYYMMDD folders under {str(directory)!r}; write one with "
                                      "`wxdask synth`")
        self.create_bucket(bucket)
        fs = s3fs.S3FileSystem(**self.writer_options(), skip_instance_cache=True)
        fs.put([str(p) for p in files], [f"{bucket}/{p.relative_to(root).as_posix()}" for p in files])
        logger.info("uploaded %d objects to s3://%s at %s", len(files), bucket, self.endpoint_url)
        return len(files)

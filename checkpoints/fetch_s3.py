"""S3 (and S3-compatible) sources: ``s3://bucket/key`` through boto3, ranged and parallel.

boto3 reads the usual AWS environment itself: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``
(or ``AWS_ENDPOINT_URL_S3``) for S3-compatible stores (MinIO, Ceph, R2...), and instance or pod roles.
The probe is a one-byte ranged ``GetObject`` (it names a missing bucket apart from a missing key,
which ``HeadObject`` cannot); downloads are ranged ``GetObject`` calls run by the shared transfer
engine, so they are split across ``MODEL_DOWNLOAD_WORKERS`` connections and resumable.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from checkpoints.errors import FetchError
from checkpoints.options import FetchOptions
from checkpoints.sources import RemoteInfo, TransientError
from checkpoints.urls import redact_url

#: Error codes that mean "do not retry": the request itself is wrong.
_PERMANENT_HINTS = {
    "NoSuchKey": "no object with this key: check the key (and the trailing '/' of an unpacked checkpoint)",
    "NoSuchBucket": "the bucket does not exist: check the bucket name, AWS_REGION and AWS_ENDPOINT_URL",
    "404": "no object with this key: check the bucket and key",
    "NotFound": "no object with this key: check the bucket and key",
    "AccessDenied": "access denied: check the credentials and the bucket policy (s3:GetObject on the key)",
    "403": "access denied: check the credentials and the bucket policy (s3:GetObject on the key)",
    "Forbidden": "access denied: check the credentials and the bucket policy (s3:GetObject on the key)",
    "InvalidAccessKeyId": "the access key is unknown: check AWS_ACCESS_KEY_ID (or the profile in use)",
    "SignatureDoesNotMatch": "the secret key does not match: check AWS_SECRET_ACCESS_KEY",
    "ExpiredToken": "the session token expired: refresh AWS_SESSION_TOKEN or the role credentials",
    "PermanentRedirect": "the bucket is in another region: set AWS_REGION to the bucket's region",
    "AuthorizationHeaderMalformed": "wrong region in the request: set AWS_REGION to the bucket's region",
    "InvalidBucketName": "the bucket name is invalid: check the s3:// URL",
}
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``.

    Raises:
        FetchError: No bucket or no key.
    """
    parts = urlsplit(url)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if "@" in bucket or not _BUCKET_RE.match(bucket or "") or not key:
        raise FetchError(
            f"{redact_url(url)} is not an s3://BUCKET/KEY location (credentials go in the AWS_* environment, "
            "never in the URL)"
        )
    return bucket, key


def make_client(options: FetchOptions) -> object:
    """An S3 client from the process's AWS environment, sized for ``options.workers`` connections."""
    try:
        import boto3
        from botocore.config import Config
    except ModuleNotFoundError:  # pragma: no cover - boto3 is a dependency
        raise FetchError("s3:// locations need boto3: pip install boto3") from None
    config = Config(
        connect_timeout=options.connect_timeout,
        read_timeout=options.stall_timeout,
        retries={"total_max_attempts": 1},  # the transfer engine retries, with resume
        max_pool_connections=max(10, options.workers * 2),
        user_agent_extra="hark-checkpoints",
    )
    return boto3.session.Session().client("s3", config=config)


def _classify(shown: str, error: Exception) -> Exception:
    from botocore import exceptions as bx

    if isinstance(error, bx.NoCredentialsError | bx.PartialCredentialsError):
        return FetchError(
            f"cannot read {shown}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or give the pod/instance a role"
        )
    if isinstance(error, bx.ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _PERMANENT_HINTS:
            return FetchError(f"{shown}: S3 error {code}: {_PERMANENT_HINTS[code]}")
        if status >= 500 or code in ("SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable",
                                     "Throttling", "RequestTimeTooSkewed"):  # fmt: skip
            return TransientError(f"S3 error {code or status}")
        return FetchError(f"{shown}: S3 error {code or status}; check the bucket, key and credentials")
    if isinstance(error, bx.EndpointConnectionError | bx.ConnectTimeoutError):
        return TransientError(
            f"cannot reach the S3 endpoint ({type(error).__name__}); check AWS_ENDPOINT_URL, AWS_REGION and the "
            "network"
        )
    if isinstance(error, bx.ReadTimeoutError):
        return TransientError("the connection stalled (no data within the stall timeout)")
    if isinstance(error, bx.BotoCoreError | OSError):
        return TransientError(f"the transfer failed or was cut ({type(error).__name__})")
    return error


class S3Source:
    """One object in a bucket."""

    def __init__(self, url: str, options: FetchOptions, client: object | None = None) -> None:
        self.bucket, self.key = parse_s3_url(url)
        self.shown = f"s3://{self.bucket}/{self.key}"
        self._options = options
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> object:
        with self._lock:
            if self._client is None:
                self._client = make_client(self._options)
            return self._client

    def child(self, name: str) -> S3Source:
        """The object ``name`` beside (or under, for a ``prefix/``) this key, sharing the client."""
        prefix = self.key if self.key.endswith("/") else self.key.rsplit("/", 1)[0] + "/"
        if prefix == "/":
            prefix = ""
        return S3Source(f"s3://{self.bucket}/{prefix}{name}", self._options, self.client)

    def probe(self) -> RemoteInfo:
        """Size and ETag from a one-byte ranged GetObject."""
        from botocore import exceptions as bx

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key, Range="bytes=0-0")  # type: ignore[attr-defined]
        except bx.ClientError as error:
            if error.response.get("Error", {}).get("Code") == "InvalidRange":  # an empty object
                return RemoteInfo(size=0, ranges=False)
            raise _classify(self.shown, error) from None
        except Exception as error:
            raise _classify(self.shown, error) from None
        response["Body"].close()
        total = str(response.get("ContentRange", "")).rpartition("/")[2]
        if not total.isdigit():
            raise FetchError(f"{self.shown}: the S3 endpoint did not report the object size; check AWS_ENDPOINT_URL")
        return RemoteInfo(size=int(total), ranges=True, validator=response.get("ETag"))

    @contextmanager
    def stream(self, start: int, end: int | None) -> Iterator[Iterable[bytes]]:
        """Bytes ``start..end`` of the object."""
        extra = {"Range": f"bytes={start}-{'' if end is None else end}"} if (start or end is not None) else {}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key, **extra)  # type: ignore[attr-defined]
        except Exception as error:
            raise _classify(self.shown, error) from None
        body = response["Body"]
        try:
            yield self._chunks(body)
        finally:
            body.close()

    def _chunks(self, body: object) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(self._options.chunk_size)  # type: ignore[attr-defined]
        except Exception as error:
            raise _classify(self.shown, error) from None

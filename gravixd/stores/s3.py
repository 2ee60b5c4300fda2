"""An S3 bucket as an object store (`s3://bucket/prefix`): AWS, MinIO, SeaweedFS, ...

The client is boto3 (botocore): it honours the standard AWS configuration exactly as the AWS
CLI does (environment, shared config files, web identity, container and instance credentials),
is thread-safe once built, and its `standard` retry mode already does jittered exponential
backoff on throttling, 5xx and connection errors. Its calls block, so every one runs in a
worker thread behind a `trio.CapacityLimiter`; this module must never call botocore on the
event loop (building the client included: it reads files and may probe credentials).

Large `Path` bodies go up as multipart uploads, parts in parallel; on any failure (or
cancellation) the upload is aborted, so no orphaned parts are left billing storage.
Every PUT and part carries a CRC32 content checksum that the server verifies; GETs validate it.
"""

from __future__ import annotations

import base64
import builtins
import logging
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from ..errors import ConfigError, ObjectNotFound, PermanentStoreError, StoreError
from .base import Body, ObjectStore, validate_key

log = logging.getLogger(__name__)

# S3 allows single PUTs up to 5 GiB, but a multipart upload streams a file in bounded memory
# and retries one part instead of the whole object. 16 MiB keeps small segments a single
# request (one round trip) and sends default 64 MiB segments as 8 parallel parts.
DEFAULT_MULTIPART_THRESHOLD_BYTES = 16 * 1024 * 1024
# S3's minimum part size is 5 MiB (except the last part); 8 MiB is boto3's own default.
DEFAULT_PART_SIZE_BYTES = 8 * 1024 * 1024
# Worker threads (and HTTP connections) one store may use at once.
DEFAULT_MAX_CONCURRENCY = 8
# botocore's `standard` mode: exponential backoff with full jitter (base 1 s, cap 20 s) on
# throttling, 5xx and connection errors. 5 attempts ride out a restart of a few seconds;
# the daemon's uploader retries further on its own schedule.
DEFAULT_MAX_ATTEMPTS = 5
_CONNECT_TIMEOUT_SECONDS = 5.0
# A 8 MiB part over a slow link; the server answers a GET's headers long before this.
_READ_TIMEOUT_SECONDS = 60.0
# Aborting an upload must finish even while the caller is being cancelled.
_ABORT_DEADLINE_SECONDS = 30.0

# Error codes that a retry will not fix: wrong bucket, wrong or unauthorised credentials,
# a request the server will always refuse.
_PERMANENT_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "NoSuchBucket",
        "SignatureDoesNotMatch",
        "InvalidArgument",
        "EntityTooLarge",
        "KMS.NotFoundException",
        "KMS.DisabledException",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})

_SSE_VALUES = ("", "AES256", "aws:kms", "aws:kms:dsse")


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Where and how to connect, resolved from the URL, config keys and environment.

    Empty strings mean "not set here": botocore then resolves the value itself (environment,
    shared config files, instance metadata) as every AWS tool does.
    """

    bucket: str
    prefix: str  # "" or ends with "/"
    endpoint_url: str = ""
    region: str = ""
    path_style: bool = False
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    sse: str = ""
    sse_kms_key_id: str = ""

    def __repr__(self) -> str:  # never print secrets
        return (
            f"S3Settings(bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
            f"path_style={self.path_style!r}, sse={self.sse!r}, "
            f"credentials={'explicit' if self.access_key_id else 'default chain'})"
        )


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split `s3://bucket/some/prefix` into ("bucket", "some/prefix/")."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"Expected store_url s3://bucket[/prefix], got {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"Expected store_url without ?query or #fragment, got {url!r}")
    prefix = parts.path.strip("/")
    if prefix:
        try:
            validate_key(prefix)
        except ValueError:
            # `..` or an empty part would let keys escape the prefix (or differ by driver).
            raise ConfigError(
                "Invalid value for `store_url`: Expected s3://bucket/prefix with a prefix of"
                f" non-empty parts other than `.` and `..`, got {url!r}"
            ) from None
        prefix += "/"
    return parts.netloc, prefix


def _env_secret(environ: Mapping[str, str], name: str) -> str:
    """`NAME` or the contents of the file `NAME_FILE` names (one trailing newline removed)."""
    value = environ.get(name, "")
    file_name = environ.get(f"{name}_FILE", "")
    if value and file_name:
        raise ConfigError(f"Expected only one of {name} and {name}_FILE, got both")
    if not file_name:
        return value
    try:
        text = Path(file_name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Could not read {name}_FILE={file_name!r}: {exc}") from exc
    return text.rstrip("\r\n")


def resolve_settings(
    url: str,
    environ: Mapping[str, str],
    *,
    s3_endpoint_url: str = "",
    s3_region: str = "",
    s3_path_style: bool = False,
    s3_access_key_id: str = "",
    s3_secret_access_key: str = "",
    s3_sse: str = "",
    s3_sse_kms_key_id: str = "",
) -> S3Settings:
    """Merge config keys (which win) with the `…_FILE` secrets of the environment.

    Plain `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ... are left to botocore,
    which reads them itself; only the `_FILE` forms, which botocore does not know, are read
    here.

    Raises:
        ConfigError: malformed URL, half a key pair, unknown SSE mode, unreadable secret file.
    """
    bucket, prefix = parse_s3_url(url)
    if not isinstance(s3_path_style, bool):
        raise ConfigError(f"Expected s3_path_style to be a bool, got {s3_path_style!r}")
    if s3_sse not in _SSE_VALUES:
        raise ConfigError(f"Expected s3_sse to be one of {_SSE_VALUES!r}, got {s3_sse!r}")
    if s3_sse_kms_key_id and not s3_sse.startswith("aws:kms"):
        raise ConfigError(
            f"Expected s3_sse = 'aws:kms' when s3_sse_kms_key_id is set, got s3_sse={s3_sse!r}"
        )

    access_key_id, secret, token = s3_access_key_id, s3_secret_access_key, ""
    if bool(access_key_id) != bool(secret):
        raise ConfigError(
            "Expected both s3_access_key_id and s3_secret_access_key, or neither; "
            f"got only {'s3_access_key_id' if access_key_id else 's3_secret_access_key'}"
        )
    if not access_key_id:
        file_id = _env_secret(environ, "AWS_ACCESS_KEY_ID")
        file_secret = _env_secret(environ, "AWS_SECRET_ACCESS_KEY")
        # Only take over from botocore when a _FILE form is in play; otherwise botocore's
        # own chain (env, profile, web identity, container, instance) applies unchanged.
        uses_file = any(
            environ.get(f"{n}_FILE")
            for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        )
        if uses_file:
            if not (file_id and file_secret):
                raise ConfigError(
                    "Expected AWS_ACCESS_KEY_ID[_FILE] and AWS_SECRET_ACCESS_KEY[_FILE] "
                    "together, got only one of them"
                )
            access_key_id, secret = file_id, file_secret
            token = _env_secret(environ, "AWS_SESSION_TOKEN")

    return S3Settings(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=s3_endpoint_url,
        region=s3_region,
        path_style=s3_path_style,
        access_key_id=access_key_id,
        secret_access_key=secret,
        session_token=token,
        sse=s3_sse,
        sse_kms_key_id=s3_sse_kms_key_id,
    )


class S3Store(ObjectStore):
    """The ObjectStore interface over one bucket and key prefix."""

    def __init__(
        self,
        settings: S3Settings,
        *,
        url: str | None = None,
        multipart_threshold_bytes: int = DEFAULT_MULTIPART_THRESHOLD_BYTES,
        part_size_bytes: int = DEFAULT_PART_SIZE_BYTES,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        if part_size_bytes < 5 * 1024 * 1024:
            raise ConfigError(
                f"Expected part_size_bytes >= 5 MiB (S3's minimum), got {part_size_bytes}"
            )
        self.settings = settings
        self.url = url or f"s3://{settings.bucket}/{settings.prefix}".rstrip("/")
        self.multipart_threshold_bytes = multipart_threshold_bytes
        self.part_size_bytes = part_size_bytes
        self.max_attempts = max_attempts
        self._max_concurrency = max_concurrency
        self._limiter = trio.CapacityLimiter(max_concurrency)
        self._client_lock = trio.Lock()
        self._client: Any = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> S3Store:
        """Build a store from `s3://bucket/prefix` and the `s3_*` config keys ("" = unset);
        `resolve_settings` names and checks them (an unknown one is a TypeError).

        Cheap and non-blocking apart from reading `…_FILE` secrets: the client is built on
        first use, in a worker thread.
        """
        return cls(resolve_settings(url, os.environ, **options), url=url)

    # --- client -------------------------------------------------------------------------

    def _build_client(self) -> Any:
        import boto3  # type: ignore[import-untyped,unused-ignore]
        from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]

        s = self.settings
        config = Config(
            retries={"mode": "standard", "max_attempts": self.max_attempts},
            connect_timeout=_CONNECT_TIMEOUT_SECONDS,
            read_timeout=_READ_TIMEOUT_SECONDS,
            max_pool_connections=self._max_concurrency,
            s3={"addressing_style": "path" if s.path_style else "auto"},
            request_checksum_calculation="when_supported",
            response_checksum_validation="when_supported",
        )
        session = boto3.session.Session(
            aws_access_key_id=s.access_key_id or None,
            aws_secret_access_key=s.secret_access_key or None,
            aws_session_token=s.session_token or None,
            region_name=s.region or None,
        )
        return session.client("s3", endpoint_url=s.endpoint_url or None, config=config)

    async def _get_client(self) -> Any:
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    try:
                        self._client = await trio.to_thread.run_sync(
                            self._build_client, limiter=self._limiter
                        )
                    except Exception as exc:
                        raise _map_error(exc, "connect to", "", self.url) from exc
        return self._client

    async def _call(self, op: str, key: str, fn: Any, /, *args: Any) -> Any:
        """Run one blocking botocore call in a worker thread and map its errors."""
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except Exception as exc:
            raise _map_error(exc, op, key, self.url) from exc

    def _sse_args(self) -> dict[str, str]:
        s = self.settings
        args: dict[str, str] = {}
        if s.sse:
            args["ServerSideEncryption"] = s.sse
        if s.sse_kms_key_id:
            args["SSEKMSKeyId"] = s.sse_kms_key_id
        return args

    def _full_key(self, key: str) -> str:
        return self.settings.prefix + validate_key(key)

    # --- the four operations ------------------------------------------------------------

    async def put(self, key: str, body: Body) -> None:
        full_key = self._full_key(key)
        client = await self._get_client()
        if isinstance(body, Path):
            try:
                size = (await trio.to_thread.run_sync(body.stat)).st_size
            except OSError as exc:
                raise StoreError(f"Could not stat {body} to upload as {key!r}: {exc}") from exc
            if size > self.multipart_threshold_bytes:
                await self._put_multipart(client, key, full_key, body, size)
                return
        await self._call("put", key, self._put_sync, client, full_key, body)

    def _put_sync(self, client: Any, full_key: str, body: Body) -> None:
        args = dict(
            Bucket=self.settings.bucket, Key=full_key, ChecksumAlgorithm="CRC32", **self._sse_args()
        )
        if isinstance(body, Path):
            with open(body, "rb") as f:
                client.put_object(Body=f, **args)
        else:
            client.put_object(Body=bytes(body) if isinstance(body, memoryview) else body, **args)

    async def _put_multipart(
        self, client: Any, key: str, full_key: str, path: Path, size: int
    ) -> None:
        bucket = self.settings.bucket
        created = await self._call(
            "start multipart upload of",
            key,
            lambda: client.create_multipart_upload(
                Bucket=bucket, Key=full_key, ChecksumAlgorithm="CRC32", **self._sse_args()
            ),
        )
        upload_id = created["UploadId"]
        part_count = -(-size // self.part_size_bytes)
        parts: list[dict[str, Any]] = [{} for _ in range(part_count)]

        async def upload_part(index: int) -> None:
            offset = index * self.part_size_bytes
            length = min(self.part_size_bytes, size - offset)
            parts[index] = await self._call(
                "upload part of",
                key,
                self._upload_part_sync,
                client,
                full_key,
                upload_id,
                path,
                index + 1,
                offset,
                length,
            )

        try:
            # Parts share the store's limiter, so one big upload cannot starve the others
            # beyond max_concurrency threads, and memory stays <= threads x part size.
            try:
                async with trio.open_nursery() as nursery:
                    for index in range(part_count):
                        nursery.start_soon(upload_part, index)
            except BaseExceptionGroup as group:
                raise _first_store_error(group) from None
            await self._call(
                "complete multipart upload of",
                key,
                lambda: client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=full_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                ),
            )
        except BaseException:
            with trio.move_on_after(_ABORT_DEADLINE_SECONDS, shield=True):
                try:
                    await self._call(
                        "abort multipart upload of",
                        key,
                        lambda: client.abort_multipart_upload(
                            Bucket=bucket, Key=full_key, UploadId=upload_id
                        ),
                    )
                except StoreError as exc:
                    # The original error matters more; a bucket lifecycle rule
                    # (AbortIncompleteMultipartUpload) is the backstop, see docs/storage.md.
                    log.warning(
                        "Could not abort multipart upload %s of %r: %s", upload_id, key, exc
                    )
            raise

    def _upload_part_sync(
        self,
        client: Any,
        full_key: str,
        upload_id: str,
        path: Path,
        part_number: int,
        offset: int,
        length: int,
    ) -> dict[str, Any]:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise StoreError(
                f"Expected {length} bytes at offset {offset} of {path}, got {len(data)} "
                "(file changed during upload)"
            )
        crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")
        response = client.upload_part(
            Bucket=self.settings.bucket,
            Key=full_key,
            UploadId=upload_id,
            PartNumber=part_number,
            Body=data,
            ChecksumCRC32=crc,
        )
        return {"PartNumber": part_number, "ETag": response["ETag"], "ChecksumCRC32": crc}

    async def get(self, key: str) -> bytes:
        full_key = self._full_key(key)
        client = await self._get_client()

        def get_sync() -> bytes:
            response = client.get_object(
                Bucket=self.settings.bucket, Key=full_key, ChecksumMode="ENABLED"
            )
            with response["Body"] as stream:
                data: bytes = stream.read()
            return data

        return await self._call("get", key, get_sync)  # type: ignore[no-any-return]

    async def delete(self, key: str) -> None:
        full_key = self._full_key(key)
        client = await self._get_client()
        await self._call(
            "delete",
            key,
            lambda: client.delete_object(Bucket=self.settings.bucket, Key=full_key),
        )

    async def list(self, prefix: str = "") -> list[str]:
        client = await self._get_client()
        base = self.settings.prefix

        def list_sync() -> list[str]:
            keys: list[str] = []
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=base + prefix):
                for item in page.get("Contents", ()):
                    keys.append(item["Key"][len(base) :])
            keys.sort()
            return keys

        return await self._call("list", prefix, list_sync)  # type: ignore[no-any-return]

    async def list_multipart_uploads(self) -> builtins.list[dict[str, Any]]:
        """Multipart uploads in progress under this store's prefix (for tests and operators)."""
        client = await self._get_client()

        def list_sync() -> list[dict[str, Any]]:
            response = client.list_multipart_uploads(
                Bucket=self.settings.bucket, Prefix=self.settings.prefix
            )
            return list(response.get("Uploads", ()))

        return await self._call("list multipart uploads of", "", list_sync)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with trio.move_on_after(5, shield=True):
                await trio.to_thread.run_sync(client.close)


def _first_store_error(group: BaseExceptionGroup) -> BaseException:
    """The first StoreError of a group of failed part uploads, or the group itself when it
    holds anything else (a Cancelled, a bug) that must propagate as is."""
    matched, rest = group.split(StoreError)
    if matched is None or rest is not None:
        return group
    leaf: BaseException = matched
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def _map_error(exc: BaseException, op: str, key: str, url: str) -> StoreError:
    """Turn a botocore exception into the store's error family (see ObjectStore)."""
    from botocore.exceptions import (  # type: ignore[import-untyped,unused-ignore]
        ClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    where = f"{op} {key!r} in {url}" if key else f"{op} {url}"
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = f"S3 {where} failed: {code} (HTTP {status}): {error.get('Message', '')}"
        if code in _NOT_FOUND_CODES:
            return ObjectNotFound(f"No object at key {key!r} in {url}")
        if code in _PERMANENT_CODES:
            return PermanentStoreError(message)
        return StoreError(message)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | NoRegionError):
        return PermanentStoreError(f"S3 {where} failed: {exc} (see docs/storage.md)")
    return StoreError(f"S3 {where} failed: {type(exc).__name__}: {exc}")

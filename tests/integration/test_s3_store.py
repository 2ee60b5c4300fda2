"""The S3 driver's own promises, against a real S3 server (SeaweedFS) on loopback:
multipart for large files with no orphaned parts, credentials from config / environment /
`_FILE` secrets, and errors mapped to permanent vs retryable."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from seaweed import SeaweedServer

from gravixd.errors import ObjectNotFound, PermanentStoreError, StoreError
from gravixd.stores import open_store
from gravixd.stores.s3 import S3Store, resolve_settings

pytestmark = pytest.mark.s3

MiB = 1024 * 1024


@pytest.fixture
def clean_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No AWS_* from the developer's shell or ~/.aws may influence a test."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    yield


def unique_url(server: SeaweedServer) -> str:
    return f"s3://{server.bucket}/s3test-{uuid.uuid4().hex[:12]}"


def small_part_store(server: SeaweedServer, **kwargs: Any) -> S3Store:
    settings = resolve_settings(unique_url(server), {}, **server.store_options())
    return S3Store(settings, multipart_threshold_bytes=6 * MiB, part_size_bytes=5 * MiB, **kwargs)


async def test_a_file_above_the_threshold_goes_up_as_multipart(
    seaweed: SeaweedServer, tmp_path: Path
) -> None:
    store = small_part_store(seaweed)
    path = tmp_path / "big.arrow"
    path.write_bytes(os.urandom(12 * MiB + 123))  # 3 parts: 5 + 5 + 2 MiB
    await store.put("big.arrow", path)

    assert await store.get("big.arrow") == path.read_bytes()
    head = seaweed.client().head_object(
        Bucket=seaweed.bucket, Key=store.settings.prefix + "big.arrow"
    )
    assert head["ETag"].strip('"').endswith("-3")  # S3's marker of a 3-part upload
    assert await store.list_multipart_uploads() == []
    await store.aclose()


async def test_a_failed_part_aborts_the_upload_leaving_no_parts(
    seaweed: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = small_part_store(seaweed)
    path = tmp_path / "big.arrow"
    path.write_bytes(os.urandom(16 * MiB))
    real_upload_part = store._upload_part_sync

    def failing_upload_part(*args: Any) -> Any:
        if args[4] == 3:  # part_number
            raise StoreError("injected: part 3 failed")
        return real_upload_part(*args)

    monkeypatch.setattr(store, "_upload_part_sync", failing_upload_part)
    with pytest.raises(StoreError, match="injected"):
        await store.put("big.arrow", path)

    assert await store.list_multipart_uploads() == []
    assert await store.list() == []
    await store.aclose()


async def test_a_cancelled_upload_is_aborted(
    seaweed: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = small_part_store(seaweed)
    path = tmp_path / "big.arrow"
    path.write_bytes(os.urandom(16 * MiB))
    started = trio.Event()
    real_upload_part = store._upload_part_sync

    def slow_upload_part(*args: Any) -> Any:
        trio.from_thread.run_sync(started.set)
        result = real_upload_part(*args)
        trio.from_thread.run(trio.sleep, 0.5)  # keep the upload open while we cancel
        return result

    monkeypatch.setattr(store, "_upload_part_sync", slow_upload_part)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.put, "big.arrow", path)
        await started.wait()
        nursery.cancel_scope.cancel()

    assert await store.list_multipart_uploads() == []
    assert await store.list() == []
    await store.aclose()


async def test_credentials_endpoint_and_region_from_standard_env_vars(
    seaweed: SeaweedServer, clean_aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    store = open_store(unique_url(seaweed), s3_path_style=True)
    await store.put("k", b"from env")
    assert await store.get("k") == b"from env"
    await store.aclose()


async def test_secrets_from_file_env_vars(
    seaweed: SeaweedServer, clean_aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "id").write_text(seaweed.access_key_id + "\n")
    (tmp_path / "secret").write_text(seaweed.secret_access_key + "\n")
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweed.endpoint_url)
    monkeypatch.setenv("AWS_REGION", seaweed.region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID_FILE", str(tmp_path / "id"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY_FILE", str(tmp_path / "secret"))
    store = open_store(unique_url(seaweed), s3_path_style=True)
    await store.put("k", b"from files")
    assert await store.get("k") == b"from files"
    await store.aclose()


async def test_config_values_win_over_env(
    seaweed: SeaweedServer, clean_aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    store = open_store(unique_url(seaweed), **seaweed.store_options())
    await store.put("k", b"config wins")
    assert await store.get("k") == b"config wins"
    await store.aclose()


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"s3_secret_access_key": "wrong-secret"}, "SignatureDoesNotMatch"),
        ({"s3_access_key_id": "nobody", "s3_secret_access_key": "x"}, "InvalidAccessKeyId"),
    ],
)
async def test_wrong_credentials_are_permanent_errors(
    seaweed: SeaweedServer, overrides: dict[str, str], code: str
) -> None:
    store = open_store(unique_url(seaweed), **{**seaweed.store_options(), **overrides})
    with pytest.raises(PermanentStoreError, match=code):
        await store.put("k", b"x")
    await store.aclose()


async def test_a_missing_bucket_is_a_permanent_error(seaweed: SeaweedServer) -> None:
    store = open_store("s3://no-such-bucket-here/p", **seaweed.store_options())
    with pytest.raises(PermanentStoreError, match="NoSuchBucket"):
        await store.put("k", b"x")
    await store.aclose()


async def test_no_credentials_anywhere_is_a_permanent_error(
    seaweed: SeaweedServer, clean_aws_env: None
) -> None:
    store = open_store(
        unique_url(seaweed), s3_endpoint_url=seaweed.endpoint_url, s3_path_style=True
    )
    with trio.fail_after(10):  # no slow probing of the instance-metadata address
        with pytest.raises(PermanentStoreError, match="credentials"):
            await store.put("k", b"x")
    await store.aclose()


async def test_a_stopped_server_is_a_retryable_error_and_a_restart_heals(
    seaweed_private: SeaweedServer,
) -> None:
    server = seaweed_private
    settings = resolve_settings(unique_url(server), {}, **server.store_options())
    store = S3Store(settings, max_attempts=2)
    await store.put("before", b"1")

    await trio.to_thread.run_sync(server.stop)
    with pytest.raises(StoreError) as info:
        await store.put("during", b"2")
    assert not isinstance(info.value, PermanentStoreError | ObjectNotFound)

    await trio.to_thread.run_sync(server.start)
    await store.put("after", b"3")
    assert await store.list() == ["after", "before"]
    await store.aclose()


async def test_sse_and_checksums_are_sent_and_accepted(seaweed: SeaweedServer) -> None:
    store = open_store(unique_url(seaweed), **seaweed.store_options(), s3_sse="AES256")
    await store.put("enc", b"encrypted at rest")
    assert await store.get("enc") == b"encrypted at rest"
    assert isinstance(store, S3Store)
    head = seaweed.client().head_object(
        Bucket=seaweed.bucket, Key=store.settings.prefix + "enc", ChecksumMode="ENABLED"
    )
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ChecksumCRC32"]
    await store.aclose()


def test_unknown_options_are_a_type_error(seaweed: SeaweedServer) -> None:
    with pytest.raises(TypeError, match="s3_bogus"):
        open_store(unique_url(seaweed), s3_bogus="x")

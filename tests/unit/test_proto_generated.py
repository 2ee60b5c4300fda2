"""The committed protobuf code matches proto/gravix/v1/events.proto (regenerate it with the
command below when this fails)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2

from gravixd.proto.gravix.v1 import events_pb2

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = (
    "cd proto && python -m grpc_tools.protoc -I. --python_out=../gravixd/proto "
    "--pyi_out=../gravixd/proto gravix/v1/events.proto"
)


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    out = tmp_path / "events.desc"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(ROOT / "proto"),
            f"--descriptor_set_out={out}",
            "gravix/v1/events.proto",
        ],
        check=True,
    )
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    committed = descriptor_pb2.FileDescriptorProto.FromString(events_pb2.DESCRIPTOR.serialized_pb)
    for descriptor in (committed, fresh):
        _drop_json_names(descriptor.message_type)  # protoc fills them only in descriptor sets
    assert committed == fresh, f"gravixd/proto is stale; regenerate with: {REGENERATE}"


def _drop_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _drop_json_names(message.nested_type)


def test_field_numbers_never_change() -> None:
    numbers = {f.name: f.number for f in events_pb2.RequestFact.DESCRIPTOR.fields}
    assert numbers == {
        "timestamp_unix_nano": 1,
        "service": 2,
        "route": 3,
        "method": 4,
        "status_code": 5,
        "duration_ms": 6,
        "bytes_in": 7,
        "bytes_out": 8,
        "trace_id": 9,
        "attributes": 10,
    }
    numbers = {f.name: f.number for f in events_pb2.ServiceEvent.DESCRIPTOR.fields}
    assert numbers == {
        "timestamp_unix_nano": 1,
        "service": 2,
        "kind": 3,
        "severity": 4,
        "message": 5,
        "trace_id": 6,
        "attributes": 7,
    }

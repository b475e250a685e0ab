"""Azure Storage queues: JSON messages, base64-encoded as the Functions host's queue trigger expects."""

from __future__ import annotations

import json
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy, QueueClient

API_VERSION = "2025-11-05"


def queue_client(connection_string: str, queue: str, *, create: bool = True, credential: Any = None) -> QueueClient:
    client = QueueClient.from_connection_string(
        connection_string,
        queue,
        credential=credential,
        api_version=API_VERSION,
        message_encode_policy=BinaryBase64EncodePolicy(),
        message_decode_policy=BinaryBase64DecodePolicy(),
    )
    if create:
        try:
            client.create_queue()
        except ResourceExistsError:
            pass
    return client


class QueueSender:
    def __init__(self, connection_string: str, queue: str, *, credential: Any = None):
        self.client = queue_client(connection_string, queue, credential=credential)

    def send(self, message: dict[str, Any], *, visibility_timeout: int | None = None) -> None:
        self.client.send_message(json.dumps(message).encode(), visibility_timeout=visibility_timeout)

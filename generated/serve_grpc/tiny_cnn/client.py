"""A small Python client for the service.

from tiny_cnn.client import Client
from tiny_cnn.signature import example_inputs

with Client("127.0.0.1:50051") as client:
    outputs = client.predict(example_inputs())  # {input name: numpy array}
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .proto import tiny_cnn_pb2_grpc as pb_grpc
from .tensors import predict_request, response_arrays


class Client:
    """Calls Model/Predict; ``token`` is sent as ``authorization: Bearer <token>`` when given."""

    def __init__(self, target: str, token: str | None = None, timeout: float = 30.0) -> None:
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        self._channel = grpc.insecure_channel(target, options=options)
        self._stub = pb_grpc.ModelStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def predict(self, inputs: dict) -> dict:
        """Outputs by name for inputs by name (numpy arrays of the model's dtypes)."""
        response = self._stub.Predict(
            predict_request(inputs), timeout=self._timeout, metadata=self._metadata
        )
        return response_arrays(response)

    def health(self, service: str = "") -> str:
        """The health status name (``SERVING`` once the model is loaded)."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self._timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

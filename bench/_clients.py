"""The three ways the benchmarks talk to ``tinkex serve``: tinkex, the official tinker 0.16.1
client, and a raw keep-alive ``httpx.Client`` (the floor: the server's own share)."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

import httpx

from bench._server import API_KEY

__all__ = ["RawClient", "close_quietly", "tinker_service", "tinkex_service"]

#: The built-in model the request-overhead benchmarks use (about 100k parameters).
SMALL_MODEL = "tinkex/tiny-llama-100k"


def tinkex_service(base_url: str, **kwargs: Any) -> Any:
    from tinkex_clients import ServiceClient

    return ServiceClient(base_url=base_url, api_key=API_KEY, **kwargs)


def tinker_service(base_url: str) -> Any:
    import tinker

    return tinker.ServiceClient(base_url=base_url, api_key=API_KEY)


def close_quietly(client: Any) -> None:
    """Close a client if it can be closed (0.16.1's ServiceClient has no public close)."""
    for name in ("close", "shutdown"):
        fn = getattr(client, name, None)
        if callable(fn):
            with contextlib.suppress(Exception):
                fn()
            return
    holder = getattr(client, "holder", None)
    fn = getattr(holder, "close", None)
    if callable(fn):
        with contextlib.suppress(Exception):
            fn()


class RawClient:
    """The protocol by hand over one keep-alive HTTP/1.1 connection, no SDK at all.

    It measures what the server and the loopback cost per request, i.e. the floor no
    client can go under.
    """

    def __init__(self, base_url: str) -> None:
        # TCP_NODELAY: httpx's sync transport writes headers and body separately, and Nagle
        # would hold the body until the server's delayed ACK (~40 ms) otherwise.
        nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        self.http = httpx.Client(
            base_url=base_url,
            headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
            timeout=60.0,
            transport=httpx.HTTPTransport(socket_options=nodelay),
        )
        body = self.post(
            "/api/v1/create_session", {"tags": [], "user_metadata": {}, "sdk_version": "bench"}
        )
        self.session_id: str = body["session_id"]
        self._model_seq = 0
        self._sampler_seq = 0
        self._seq: dict[str, int] = {}

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def wait(self, request_id: str) -> Any:
        """Long-poll ``retrieve_future`` until the result (or failure) arrives."""
        while True:
            response = self.http.post(
                "/api/v1/retrieve_future", json={"request_id": request_id}, timeout=60.0
            )
            if response.status_code == 408:
                continue
            response.raise_for_status()
            body = response.json()
            if isinstance(body, dict) and body.get("type") == "try_again":
                continue
            if isinstance(body, dict) and "error" in body:
                raise RuntimeError(f"request {request_id} failed: {body['error']}")
            return body

    def create_model(self, base_model: str, rank: int = 4) -> str:
        fut = self.post(
            "/api/v1/create_model",
            {
                "session_id": self.session_id,
                "model_seq_id": self._model_seq,
                "base_model": base_model,
                "lora_config": {"rank": rank},
            },
        )
        self._model_seq += 1
        model_id: str = self.wait(fut["request_id"])["model_id"]
        self._seq[model_id] = 0
        return model_id

    def create_sampler(self, base_model: str) -> str:
        body = self.post(
            "/api/v1/create_sampling_session",
            {
                "session_id": self.session_id,
                "sampling_session_seq_id": self._sampler_seq,
                "base_model": base_model,
            },
        )
        self._sampler_seq += 1
        sampler: str = body["sampling_session_id"]
        self._seq[sampler] = 0
        return sampler

    def get_info(self, model_id: str) -> Any:
        return self.post("/api/v1/get_info", {"model_id": model_id})

    def sample(self, sampler: str, prompt: list[int], max_tokens: int, seed: int = 0) -> Any:
        self._seq[sampler] += 1
        fut = self.post(
            "/api/v1/asample",
            {
                "sampling_session_id": sampler,
                "seq_id": self._seq[sampler],
                "num_samples": 1,
                "prompt": {"chunks": [{"tokens": prompt}]},
                "sampling_params": {"max_tokens": max_tokens, "seed": seed},
            },
        )
        return self.wait(fut["request_id"])

    def forward_backward(self, model_id: str, tokens: list[int]) -> Any:
        """One datum of ``len(tokens) - 1`` positions, ``cross_entropy``, JSON body."""
        self._seq[model_id] += 1
        n = len(tokens) - 1
        datum = {
            "model_input": {"chunks": [{"tokens": tokens[:-1]}]},
            "loss_fn_inputs": {
                "target_tokens": {"data": tokens[1:], "dtype": "int64", "shape": [n]},
                "weights": {"data": [1.0] * n, "dtype": "float32", "shape": [n]},
            },
        }
        fut = self.post(
            "/api/v1/forward_backward",
            {
                "forward_backward_input": {
                    "data": [datum],
                    "loss_fn": "cross_entropy",
                    "loss_fn_config": None,
                },
                "model_id": model_id,
                "seq_id": self._seq[model_id],
            },
        )
        return self.wait(fut["request_id"])

    def close(self) -> None:
        self.http.close()


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)

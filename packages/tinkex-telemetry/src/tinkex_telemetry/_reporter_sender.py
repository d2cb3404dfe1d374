"""Posting one telemetry batch, with bounded retries (protocol.md §2.10, §2.15).

The reporter's worker thread owns one :class:`BatchSender`: it opens the HTTP client on
that thread (creating a TLS context is not free) and posts each batch, retrying transport
errors, 408, 429 and 5xx answers with the settings' :class:`tinkex_types.Backoff`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from tinkex_http import Secret, is_sensitive_header, scrub_exception, scrub_request
from tinkex_telemetry._redact import register_secret
from tinkex_telemetry._reporter_settings import NETWORK_SCHEMES, ReporterSettings, secret_value

__all__ = ["BatchSender", "SendResult"]

_RETRYABLE_STATUS = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class SendResult:
    """How one batch went: ``delivered`` or not, after ``failed_attempts`` failures."""

    delivered: bool
    failed_attempts: int
    reason: str = ""


class BatchSender:
    """Posts JSON bodies to ``endpoint`` (see the module docstring)."""

    def __init__(
        self,
        endpoint: str,
        *,
        settings: ReporterSettings,
        sdk_version: str,
        api_key: object = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._backoff = settings.backoff
        self._client: httpx.Client | None = None
        send_headers = {"content-type": "application/json", "user-agent": f"tinkex/{sdk_version}"}
        #: Secret headers, held as :class:`tinkex_http.Secret` values and put in plain text
        #: only into the request being sent (scrubbed from it afterwards).
        self._secrets: dict[str, Secret] = {}
        for name, value in (headers or {}).items():
            if is_sensitive_header(name):
                register_secret(value)
                self._secrets[name.lower()] = Secret(value)
            else:
                send_headers[name] = value
        key = secret_value(api_key)
        if key:
            register_secret(key)
            self._secrets["x-api-key"] = Secret(key)
        self._client_args: dict[str, Any] = {
            "transport": transport,
            "timeout": settings.http_timeout,
            "headers": send_headers,
        }
        self._post_url = endpoint
        target = httpx.URL(endpoint)
        if target.scheme.lower() not in NETWORK_SCHEMES:
            # httpx turns an absolute URL without a host (``local:/api/...``) into a bare
            # path when it sends it (and then fails on cookies): post the path against a
            # client base URL that keeps the scheme.
            self._client_args["base_url"] = target.copy_with(raw_path=b"/")
            self._post_url = target.raw_path.decode("ascii")

    def open(self) -> None:
        """Create the HTTP client on the calling thread (raises what httpx raises)."""
        self._client = httpx.Client(**self._client_args)

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def send(self, body: Mapping[str, Any], abort: threading.Event) -> SendResult:
        """Post ``body``; retry as the settings say until delivered, refused or ``abort``."""
        if self._client is None:
            raise RuntimeError("BatchSender.send() before open()")
        failed = 0
        for attempt in range(self.settings.max_retries + 1):
            if abort.is_set():
                return SendResult(False, failed, "aborted")
            retryable = True
            try:
                response = self._post(body)
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return SendResult(True, failed)
                reason = f"HTTP {status}"
                retryable = status in _RETRYABLE_STATUS or status >= 500
            failed += 1
            if not retryable or attempt == self.settings.max_retries:
                return SendResult(False, failed, reason)
            abort.wait(self._backoff.delay(attempt))
        return SendResult(False, failed, "unknown")  # max_retries < 0 is rejected earlier

    def _post(self, body: Mapping[str, Any]) -> httpx.Response:
        assert self._client is not None
        secrets = {name: secret.get_secret_value() for name, secret in self._secrets.items()}
        try:
            response = self._client.post(self._post_url, json=body, headers=secrets)
        except BaseException as exc:
            scrub_exception(exc)
            raise
        scrub_request(response.request)
        return response

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

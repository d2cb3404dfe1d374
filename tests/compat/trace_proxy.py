"""A recording HTTP proxy in front of a Tinker server, for protocol study (stdlib only).

It forwards every request to ``--upstream`` unchanged and appends one JSON line per exchange
to ``--log``: method, path, the request headers (all but credentials: ``X-API-Key``,
``Authorization`` and cookies are never written), the body size and the first bytes of a
JSON body (or the hex head of a binary one), and the answer's status and content type.

With ``--client-config JSON`` it answers ``POST /api/v1/client/config`` itself with that
object (a server without the route would stop every client from 0.18 on at the first call),
so the rest of a newer client's loop can be observed against an older server. Nothing else
is answered locally::

    python tests/compat/trace_proxy.py --upstream http://127.0.0.1:8731 --port 8741 \
        --log /tmp/trace.jsonl --client-config '{}'
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}
# Never recorded: credentials.
SECRET = {"x-api-key", "authorization", "cookie", "proxy-authorization"}


def _body_preview(body: bytes, content_type: str) -> str:
    if not body:
        return ""
    if "json" in content_type or body[:1] in (b"{", b"["):
        return body[:400].decode("utf-8", "replace")
    return "hex:" + body[:48].hex()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: urllib.parse.SplitResult
    log_path: str
    client_config: dict[str, Any] | None
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _record(self, entry: dict[str, Any]) -> None:
        with self.lock, open(self.log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        entry: dict[str, Any] = {
            "method": self.command,
            "path": self.path,
            "headers": {k: v for k, v in headers.items() if k not in SECRET},
            "body_bytes": len(body),
            "body": _body_preview(body, headers.get("content-type", "")),
        }
        if self.client_config is not None and self.path.split("?")[0] == "/api/v1/client/config":
            payload = json.dumps(self.client_config).encode()
            self._reply(200, {"content-type": "application/json"}, payload)
            entry.update(status=200, answered_by="proxy", response=payload.decode())
            self._record(entry)
            return
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=120)
        forward = {k: v for k, v in self.headers.items() if k.lower() not in HOP | {"host"}}
        forward["Host"] = self.upstream.netloc
        try:
            conn.request(self.command, self.path, body=body or None, headers=forward)
            resp = conn.getresponse()
            data = resp.read()
            out = {k.lower(): v for k, v in resp.getheaders() if k.lower() not in HOP}
            out.pop("content-length", None)
            self._reply(resp.status, out, data)
            ctype = out.get("content-type", "")
            entry.update(
                status=resp.status, response_type=ctype, response=_body_preview(data, ctype)[:300]
            )
        except OSError as exc:
            self._reply(502, {"content-type": "text/plain"}, str(exc).encode())
            entry.update(status=502, error=str(exc))
        finally:
            conn.close()
        self._record(entry)

    def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", required=True)
    parser.add_argument("--client-config", default=None, help="JSON object for client/config")
    args = parser.parse_args()
    Handler.upstream = urllib.parse.urlsplit(args.upstream)
    Handler.log_path = args.log
    Handler.client_config = json.loads(args.client_config) if args.client_config else None
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"trace proxy listening on http://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

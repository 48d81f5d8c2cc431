"""A local HTTP target for the action gate's tests: a threaded http.server on 127.0.0.1 that
records what it received and answers by path:

- ``/json`` → 200 JSON ``{"ok": true, "path": ..., "query": ...}`` (plus a Set-Cookie header)
- ``/echo`` → 200 JSON of the request: method, path, headers, body
- ``/text`` → 200 text/plain
- ``/status/<code>`` → that status
- ``/redirect?to=<url>`` → 302 to ``to``
- ``/big?n=<bytes>[&chunked=1]`` → n bytes (chunked: no Content-Length)
- ``/slow?s=<seconds>`` → waits, then 200
- ``/trickle?s=<seconds>`` → headers at once, then one body byte every ``s`` seconds, forever
- ``/gzip?n=<bytes>`` → n bytes of "x", gzip-encoded
- ``/until-close`` → a body with neither Content-Length nor chunking: it ends when the
  connection closes
- ``/early-hints`` → a 103 interim answer, then 200 JSON
- ``/hang-up`` → closes the connection without answering

Each request's record carries ``client_port``: requests on one kept-alive connection share it.
"""

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, status: int, body: bytes, content_type="application/json", **headers):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self):
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers.items()),
                "body": body,
                "client_port": self.client_address[1],
            }
        )
        path = parts.path
        if path == "/json":
            payload = {"ok": True, "path": path, "query": query}
            self._answer(200, json.dumps(payload).encode(), Set_Cookie="session=abc", X_Request_Id="r1")
        elif path == "/echo":
            payload = {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers.items()),
                "body": body.decode("utf-8", "replace"),
            }
            self._answer(200, json.dumps(payload).encode())
        elif path == "/text":
            self._answer(200, b"plain words", "text/plain; charset=utf-8")
        elif path.startswith("/status/"):
            self._answer(int(path.rsplit("/", 1)[1]), b"{}")
        elif path == "/redirect":
            self._answer(302, b"", Location=query["to"])
        elif path == "/big":
            size = int(query["n"])
            if query.get("chunked"):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for _ in range(0, size, 1024):
                    self.wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self._answer(200, b"x" * size, "text/plain")
        elif path == "/slow":
            time.sleep(float(query["s"]))
            self._answer(200, b"{}")
        elif path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(float(query["s"]))
            except OSError:
                return
        elif path == "/gzip":
            self._answer(200, gzip.compress(b"x" * int(query["n"])), "text/plain", Content_Encoding="gzip")
        elif path == "/until-close":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"all of it")
            self.close_connection = True
        elif path == "/early-hints":
            self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            self._answer(200, b'{"final": true}')
        elif path == "/hang-up":
            self.close_connection = True
            self.connection.shutdown(2)
        else:
            self._answer(404, b"{}")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


class Target:
    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.seen = []
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def seen(self) -> list[dict]:
        return self.server.seen

    def close(self):
        self.server.shutdown()
        self.server.server_close()

"""A loopback HTTP server for fake model files: Range requests, redirects with headers, a connection cut mid-file."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    body: bytes
    headers: dict = field(default_factory=dict)
    cut_after: int | None = None  # close the connection after this many body bytes (once)
    honour_range: bool = True
    redirect_to: str | None = None  # answer 302 to this path (with `headers`) instead of the body


class LoopbackServer:
    """An HTTP server on 127.0.0.1 (`url`), serving from a daemon thread while inside `with`."""

    def _listen(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class FileServer(LoopbackServer):
    """Serves `files` (path -> Served) with Range support; `requests` records (path, Range header)."""

    def __init__(self):
        self.files: dict[str, Served] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                return

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                served = server.files.get(self.path)
                if served is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if served.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", served.redirect_to)
                    for name, value in served.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, start = served.body, 0
                requested = self.headers.get("Range")
                if requested and served.honour_range:
                    start = int(requested.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = body[start:]
                self.send_header("Content-Length", str(len(chunk)))
                for name, value in served.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if served.cut_after is not None:
                    self.wfile.write(chunk[:served.cut_after])
                    served.cut_after = None
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self._listen(Handler)

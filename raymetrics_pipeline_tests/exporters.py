"""Real HTTP servers on 127.0.0.1 that act as Prometheus exporters for tests."""

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Exporter:
    """Serves ``/metrics``; ``behaviour`` picks how: ok, error, drip (never finishes in time). ``body_for_hit``, if
    given, makes the body of each request from its number (1 for the first)."""

    def __init__(
        self,
        body: str = "",
        behaviour: str = "ok",
        status: int = 200,
        body_for_hit: Callable[[int], str] | None = None,
    ) -> None:
        self.body, self.behaviour, self.status, self.body_for_hit = body, behaviour, status, body_for_hit
        self.hits = 0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                exporter.hits += 1
                body = exporter.body_for_hit(exporter.hits) if exporter.body_for_hit else exporter.body
                payload = body.encode()
                self.send_response(exporter.status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(payload) if exporter.behaviour != "drip" else 10_000))
                self.end_headers()
                if exporter.behaviour == "drip":
                    try:
                        for _ in range(200):
                            self.wfile.write(b"#")
                            self.wfile.flush()
                            time.sleep(0.1)
                    except OSError:
                        pass
                    return
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.target = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "Exporter":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()

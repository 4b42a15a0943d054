import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from raymetrics_pipeline.ingest.targets import TargetError, TargetSettings, discover

SD = [{"labels": {"job": "ray"}, "targets": ["192.0.2.2:8080", "192.0.2.2:44217"]}, {"targets": ["192.0.2.3:8080"]}]


@pytest.fixture
def dashboard():
    """A real HTTP server answering like Ray's dashboard GET /api/prometheus/sd."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = json.dumps(SD).encode() if self.path == "/api/prometheus/sd" else b"not found"
            self.send_response(200 if self.path == "/api/prometheus/sd" else 404)
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_static_list_wins_and_is_deduplicated(tmp_path):
    found = discover(
        TargetSettings(
            static_targets=" 10.0.0.5:8080,10.0.0.6:8080 ,10.0.0.5:8080, [::1]:9000", discovery_file=str(tmp_path / "x")
        )
    )
    assert found.targets == ("10.0.0.5:8080", "10.0.0.6:8080", "[::1]:9000")
    assert found.source == "RAY_METRICS_TARGETS"


@pytest.mark.parametrize("bad", ["10.0.0.5", "10.0.0.5:0", "host:99999", "http://h:1"])
def test_a_malformed_static_target_names_the_setting(bad):
    with pytest.raises(TargetError, match="RAY_METRICS_TARGETS"):
        discover(TargetSettings(static_targets=bad))


def test_discovery_file_is_read_afresh_each_time(tmp_path):
    path = tmp_path / "prom_metrics_service_discovery.json"
    settings = TargetSettings(discovery_file=str(path))
    missing = discover(settings)
    assert missing.targets == () and str(path) in missing.skip_reason()
    assert "ray start --head --metrics-export-port" in missing.skip_reason()
    path.write_text(json.dumps(SD))
    assert discover(settings).targets == ("192.0.2.2:8080", "192.0.2.2:44217", "192.0.2.3:8080")
    path.write_text(json.dumps([{"targets": ["192.0.2.9:8080"]}]))
    assert discover(settings).targets == ("192.0.2.9:8080",)
    path.write_text('[{"targets": ["192.0.2.9:80')  # Ray rewriting the file
    assert discover(settings).targets == ()


def test_host_override_keeps_ports_and_collapses_nodes(tmp_path):
    path = tmp_path / "sd.json"
    path.write_text(json.dumps(SD))
    found = discover(TargetSettings(discovery_file=str(path), host_override="127.0.0.1"))
    assert found.targets == ("127.0.0.1:8080", "127.0.0.1:44217")


def test_dashboard_discovery_over_http(dashboard, tmp_path):
    found = discover(TargetSettings(dashboard_url=dashboard + "/", discovery_file=str(tmp_path / "absent")))
    assert found.source == "RAY_DASHBOARD_URL"
    assert found.targets == ("192.0.2.2:8080", "192.0.2.2:44217", "192.0.2.3:8080")


def test_unreachable_dashboard_is_a_reason_not_a_crash():
    found = discover(TargetSettings(dashboard_url="http://127.0.0.1:9"), timeout_seconds=1)
    assert found.targets == () and "127.0.0.1:9/api/prometheus/sd" in found.detail


def test_a_discovery_document_of_the_wrong_shape_is_an_error(tmp_path):
    path = tmp_path / "sd.json"
    path.write_text(json.dumps({"targets": ["a:1"]}))
    with pytest.raises(TargetError, match="RAY_PROM_DISCOVERY_FILE"):
        discover(TargetSettings(discovery_file=str(path)))

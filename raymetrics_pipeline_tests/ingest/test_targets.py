import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from raymetrics_pipeline.ingest.targets import MAX_DISCOVERY_FILE_BYTES, TargetError, TargetSettings, discover

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


def ray_layout(temp_dir, session: str, document) -> tuple:
    """Ray 2.60's files: ``<temp_dir>/<session>/prom_metrics_service_discovery.json``, and the legacy path
    ``<temp_dir>/prom_metrics_service_discovery.json`` a symlink to it."""
    session_file = temp_dir / session / "prom_metrics_service_discovery.json"
    session_file.parent.mkdir(parents=True)
    session_file.write_text(json.dumps(document))
    legacy = temp_dir / "prom_metrics_service_discovery.json"
    legacy.symlink_to(session_file)
    return legacy, session_file


SESSION = "session_2026-11-30_07-30-55_508794_18017"


def test_the_discovery_file_names_the_ray_session_it_belongs_to(tmp_path):
    legacy, session_file = ray_layout(tmp_path, SESSION, SD)
    for path in (legacy, session_file):
        found = discover(TargetSettings(discovery_file=str(path)))
        assert (found.source, found.origin, found.session) == ("RAY_PROM_DISCOVERY_FILE", str(path), SESSION)
        assert found.describe() == f"3 targets from RAY_PROM_DISCOVERY_FILE {path}, session {SESSION}"
    copy = tmp_path / "copy.json"  # Ray's fallback when it cannot make the symlink: the session cannot be told
    copy.write_text(session_file.read_text())
    assert discover(TargetSettings(discovery_file=str(copy))).session == ""


def test_a_discovery_file_whose_session_is_gone_is_missing(tmp_path):
    legacy, session_file = ray_layout(tmp_path, SESSION, SD)
    session_file.unlink()  # the session folder cleaned away, the legacy symlink left dangling
    found = discover(TargetSettings(discovery_file=str(legacy)))
    assert found.targets == () and "does not exist" in found.detail


def test_when_nothing_answers_the_reason_names_source_session_targets_and_what_to_check(tmp_path):
    legacy, _ = ray_layout(tmp_path, SESSION, SD)
    found = discover(TargetSettings(discovery_file=str(legacy)))
    errors = {target: "connection refused" for target in found.targets}
    reason = found.unreachable_reason(errors)
    assert reason.startswith(
        f"No Ray metrics endpoint answers (3 targets from RAY_PROM_DISCOVERY_FILE {legacy}, session {SESSION}: "
        "192.0.2.2:8080 connection refused; 192.0.2.2:44217 connection refused; 192.0.2.3:8080 connection refused). "
        "Is Ray running? `ray stop` leaves the discovery file behind"
    )
    assert "ray start --head --metrics-export-port=8080" in reason and "set RAY_METRICS_HOST" in reason
    overridden = discover(TargetSettings(discovery_file=str(legacy), host_override="127.0.0.1"))
    reason = overridden.unreachable_reason({target: "connection refused" for target in overridden.targets})
    assert "host replaced by RAY_METRICS_HOST=127.0.0.1" in reason and "Check that RAY_METRICS_HOST=127.0.0.1" in reason


def test_a_long_list_of_dead_targets_is_cut_short():
    found = discover(TargetSettings(static_targets=",".join(f"10.0.0.{n}:8080" for n in range(1, 13))))
    reason = found.unreachable_reason({target: "connection refused" for target in found.targets})
    assert "12 targets from RAY_METRICS_TARGETS:" in reason and "10.0.0.5:8080" in reason
    assert "10.0.0.6:8080" not in reason and "and 7 more" in reason
    assert "RAY_METRICS_TARGETS lists their metrics host:port" in reason


def test_some_endpoints_down_says_which_and_that_the_others_were_scraped(dashboard, tmp_path):
    found = discover(TargetSettings(dashboard_url=dashboard, discovery_file=str(tmp_path / "absent")))
    message = found.partly_unreachable({"192.0.2.3:8080": "ConnectError: [Errno 111] Connection refused"})
    assert message.startswith("1 of 3 Ray metrics endpoints did not answer (192.0.2.3:8080 ConnectError")
    assert "the others were scraped" in message and "set RAY_METRICS_HOST" in message


def test_a_discovery_file_that_is_a_pipe_is_refused_at_once_not_waited_on(tmp_path):
    """A FIFO with no writer once hung the sensor and the run forever."""
    fifo = tmp_path / "prom_metrics_service_discovery.json"
    os.mkfifo(fifo)
    started = time.monotonic()
    discovery = discover(TargetSettings(discovery_file=str(fifo)))
    assert time.monotonic() - started < 1.0
    assert not discovery.targets and "named pipe" in discovery.detail and "RAY_PROM_DISCOVERY_FILE" in discovery.detail


def test_a_folder_or_a_huge_file_is_refused_with_the_setting_named(tmp_path):
    assert "a folder" in discover(TargetSettings(discovery_file=str(tmp_path))).detail
    huge = tmp_path / "huge.json"
    with huge.open("wb") as handle:
        handle.truncate(MAX_DISCOVERY_FILE_BYTES + 1)
    discovery = discover(TargetSettings(discovery_file=str(huge)))
    assert not discovery.targets and "larger than" in discovery.detail and "RAY_PROM_DISCOVERY_FILE" in discovery.detail

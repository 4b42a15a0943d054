"""Samples per second for parse → OTLP → body → gzip, against a naive baseline in the same run.

Baseline: ``prometheus_client``'s parser, ``opentelemetry-proto`` messages built from its
families, ``json_format.MessageToJson`` and gzip — what one would write first.
Ours: the scrape op's own path with the cyclic GC paused as in a cycle: ``ingest.cycle.convert``
(own parser, conversion), ``parseable.encode.encode`` (hand-written OTLP/JSON, or OTLP/protobuf),
then ``parseable.encode.compress`` with gzip (or zstd), one scrape per call.

A run scrapes the same targets every 15 s for an hour in one process (README), and the parser and
the encoders keep what they read from one cycle to the next (label sets, comment lines, attributes
as JSON), so ours is measured twice: as a run's cycles after its first (steady state), and as its
first cycle (all of that forgotten before every scrape).

Run: ``python benchmarks/encode_throughput.py [--repeat N] [--smoke]``. Prints figures and ratios;
the machine is shared and noisy, so compare ratios measured in one run, not absolute numbers.
``--smoke`` runs a few scrapes once, in seconds, to show the benchmark still works.
"""

import argparse
import gzip
import math
import statistics
import sys
import time
from pathlib import Path

from google.protobuf import json_format
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from raymetrics_pipeline.ingest import otlp, prometheus  # noqa: E402
from raymetrics_pipeline.ingest.cycle import convert, cyclic_gc_paused  # noqa: E402
from raymetrics_pipeline.ingest.prometheus import NO_LABELS  # noqa: E402
from raymetrics_pipeline.ingest.scrape import ScrapeResult  # noqa: E402
from raymetrics_pipeline.parseable import encode as encoding  # noqa: E402
from raymetrics_pipeline.parseable.encode import DEFAULT_MAX_REQUEST_BYTES, JSON, PROTOBUF, compress, encode  # noqa: E402
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures  # noqa: E402

SMOKE_SCRAPES = 6


def baseline(texts: list[tuple[str, int]]) -> int:
    samples = 0
    for text, time_ns in texts:
        data = metrics_pb2.MetricsData()
        scope = data.resource_metrics.add().scope_metrics.add()
        for family in text_string_to_metric_families(text):
            metric = scope.metrics.add(name=family.name, description=family.documentation)
            if family.type == "histogram":
                series: dict = {}
                for sample in family.samples:
                    samples += 1
                    labels = {k: v for k, v in sample.labels.items() if k != "le"}
                    entry = series.setdefault(
                        tuple(sorted(labels.items())), {"labels": labels, "buckets": [], "sum": 0.0, "count": 0}
                    )
                    if sample.name.endswith("_bucket"):
                        entry["buckets"].append((float(sample.labels["le"]), sample.value))
                    elif sample.name.endswith("_sum"):
                        entry["sum"] = sample.value
                    elif sample.name.endswith("_count"):
                        entry["count"] = int(sample.value)
                metric.histogram.aggregation_temporality = 2
                for entry in series.values():
                    buckets = sorted(entry["buckets"])
                    cumulative = [int(v) for b, v in buckets if b != math.inf]
                    point = metric.histogram.data_points.add(
                        time_unix_nano=time_ns,
                        count=entry["count"],
                        sum=entry["sum"],
                        explicit_bounds=[b for b, _ in buckets if b != math.inf],
                        bucket_counts=[
                            b - a for a, b in zip([0, *cumulative], [*cumulative, entry["count"]], strict=True)
                        ],
                    )
                    for key, value in entry["labels"].items():
                        point.attributes.add(key=key, value=common_pb2.AnyValue(string_value=value))
                continue
            points = metric.sum.data_points if family.type == "counter" else metric.gauge.data_points
            for sample in family.samples:
                samples += 1
                point = points.add(time_unix_nano=time_ns, as_double=sample.value)
                for key, value in sample.labels.items():
                    point.attributes.add(key=key, value=common_pb2.AnyValue(string_value=value))
        gzip.compress(json_format.MessageToJson(data).encode())
    return samples


def forget_what_runs_keep() -> None:
    """Empty what the parser and encoders keep from one cycle to the next, as a run's first cycle finds them."""
    prometheus.forget_remembered()
    otlp.forget_remembered()
    encoding.forget_remembered()


def ours(texts: list[tuple[str, int]], content_type: str = JSON, compression: str = "gzip", cold: bool = False) -> int:
    samples = 0
    for text, time_ns in texts:
        if cold:
            forget_what_runs_keep()
        with cyclic_gc_paused():
            outcome, metrics = convert(ScrapeResult("fixture", time_ns, 0.0, 200, text, len(text)), NO_LABELS)
            for body in encode([metrics], content_type, DEFAULT_MAX_REQUEST_BYTES):
                compress(body, compression)
        samples += outcome.samples
    return samples


VARIANTS = {
    "ours, OTLP/JSON + gzip, steady state": lambda texts: ours(texts),
    "ours, OTLP/JSON + zstd, steady state": lambda texts: ours(texts, compression="zstd"),
    "ours, OTLP/protobuf + gzip, steady state": lambda texts: ours(texts, PROTOBUF),
    "ours, OTLP/JSON + gzip, a run's first cycle": lambda texts: ours(texts, cold=True),
}


def measure(functions, texts, repeat: int) -> list[tuple[float, int]]:
    """Median samples/s of each function, their runs interleaved so load on the machine hits all alike; each
    round starts in the steady state (after the first-cycle variant of the round before)."""
    rates: list[list[float]] = [[] for _ in functions]
    samples = [0] * len(functions)
    for _ in range(repeat):
        ours(texts)
        for index, function in enumerate(functions):
            started = time.perf_counter()
            samples[index] = function(texts)
            rates[index].append(samples[index] / (time.perf_counter() - started))
    return [(statistics.median(r), n) for r, n in zip(rates, samples, strict=True)]


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--repeat", type=int, default=5)
    arguments.add_argument("--smoke", action="store_true", help=f"{SMOKE_SCRAPES} scrapes, once: a few seconds")
    options = arguments.parse_args()
    fixtures = scrape_fixtures()[:SMOKE_SCRAPES] if options.smoke else scrape_fixtures()
    repeat = 1 if options.smoke else options.repeat
    texts = [(f.text(), f.scrape_time_unix_nano) for f in fixtures]
    origins = sorted({f.id.split("/")[0] for f in fixtures})
    print(f"{len(texts)} scrapes ({', '.join(origins)} fixtures), {sum(len(t) for t, _ in texts) / 1e6:.1f} MB of text")
    figures = measure([baseline, *VARIANTS.values()], texts, repeat)
    (base_rate, base_samples), *our_figures = figures
    base_name = "baseline (prometheus_client + proto + MessageToJson + gzip)"
    width = max(map(len, [base_name, *VARIANTS]))
    print(f"{base_name:{width}}  {base_rate:>9,.0f} samples/s")
    for name, (rate, samples) in zip(VARIANTS, our_figures, strict=True):
        assert samples == base_samples, f"{name} read {samples} samples, the baseline {base_samples}"
        print(f"{name:{width}}  {rate:>9,.0f} samples/s  {rate / base_rate:5.1f}x baseline")


if __name__ == "__main__":
    main()

"""Reads a scrape of replpool's GET /metrics with Prometheus' own Python parser and checks it.

Usage: check.py FILE. Exits 0 when the scrape passes; otherwise prints every problem found
and exits 1. Run by tests/metrics.rs on what it scraped after its run.

Checked: every family replpool documents (docs/architecture.md, "Metrics") is there with its
type; histograms are histograms (cumulative buckets up to +Inf, equal to their count), never
summaries; every label value a family documents exists (they are made at zero at start) and
none other appears; no label is an id or a raw path; every name has the replpool_ prefix.
"""

import math
import sys

from prometheus_client.parser import text_string_to_metric_families

# As the parser names families: a counter's family name is without its `_total`.
FAMILIES = {
    "replpool_executions": "counter",
    "replpool_execution_queue_wait_seconds": "histogram",
    "replpool_execution_duration_seconds": "histogram",
    "replpool_execution_end_to_end_seconds": "histogram",
    "replpool_sessions_live": "gauge",
    "replpool_sessions_created": "counter",
    "replpool_sessions_ended": "counter",
    "replpool_pool_target_workers": "gauge",
    "replpool_pool_ready_workers": "gauge",
    "replpool_pool_refills": "counter",
    "replpool_pool_acquire_waits": "counter",
    "replpool_template_state": "gauge",
    "replpool_template_forks": "counter",
    "replpool_template_restarts": "counter",
    "replpool_workers_died": "counter",
    "replpool_cold_fallbacks": "counter",
    "replpool_cold_starts_waiting": "gauge",
    "replpool_limit_refusals": "counter",
    "replpool_http_requests": "counter",
    "replpool_process_resident_memory_bytes": "gauge",
    "replpool_process_open_fds": "gauge",
    "replpool_build_info": "gauge",
}

# The values a label takes, all of them present from the start.
LABEL_VALUES = {
    "replpool_executions": {
        "outcome": {"ok", "error", "timeout", "interrupted", "worker_died", "limit"},
        "mode": {"warm", "cold", "one_shot"},
    },
    "replpool_sessions_ended": {"reason": {"deleted", "idle", "evicted", "shutdown"}},
    "replpool_workers_died": {
        "cause": {"signal", "exit", "oom", "cpu_limit", "unresponsive", "lost", "idle"}
    },
    "replpool_limit_refusals": {
        "limit": {"pids", "memory", "cpu", "disk_quota", "output_truncated"}
    },
    "replpool_pool_refills": {"pool": {"sessions", "lean"}},
    "replpool_pool_acquire_waits": {"pool": {"sessions", "lean"}},
}

# Labels that would make a series per session, request or path.
FORBIDDEN_LABELS = {"session", "session_id", "id", "execution_id", "path", "uri"}


def problems_of(text):
    problems = []
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name, kind in FAMILIES.items():
        family = families.get(name)
        if family is None:
            problems.append(f"{name}: missing")
        elif family.type != kind:
            problems.append(f"{name}: a {family.type}, expected a {kind}")
        elif not family.samples:
            problems.append(f"{name}: no samples")
    for name, family in families.items():
        if not name.startswith("replpool_"):
            problems.append(f"{name}: not under the replpool_ prefix")
        if name not in FAMILIES:
            problems.append(f"{name}: not a documented family")
        for sample in family.samples:
            bad = FORBIDDEN_LABELS & sample.labels.keys()
            if bad:
                problems.append(f"{sample.name}: labelled by {sorted(bad)}")
            if "quantile" in sample.labels:
                problems.append(f"{sample.name}: a summary's quantile (histograms only)")
            if math.isnan(sample.value) or sample.value < 0:
                problems.append(f"{sample.name}{sample.labels}: value {sample.value}")
        if family.type == "histogram":
            problems += histogram_problems(family)
    for name, labels in LABEL_VALUES.items():
        family = families.get(name)
        if family is None:
            continue
        for label, values in labels.items():
            seen = {sample.labels.get(label) for sample in family.samples}
            if values - seen:
                problems.append(f"{name}: no series for {label} in {sorted(values - seen)}")
            if seen - values:
                problems.append(f"{name}: undocumented {label} {sorted(map(str, seen - values))}")
    build = families.get("replpool_build_info")
    if build is not None:
        for sample in build.samples:
            if sample.value != 1 or not sample.labels.get("version") or not sample.labels.get(
                "revision"
            ):
                problems.append(f"replpool_build_info: {sample}")
    return problems


def histogram_problems(family):
    """Each label set's buckets are cumulative, end at +Inf, and +Inf equals the count."""
    problems = []
    series = {}
    for sample in family.samples:
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        entry = series.setdefault(tuple(sorted(labels.items())), {"buckets": [], "count": None})
        if sample.name.endswith("_bucket"):
            entry["buckets"].append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_count"):
            entry["count"] = sample.value
    for labels, entry in series.items():
        buckets = sorted(entry["buckets"])
        if not buckets or buckets[-1][0] != math.inf:
            problems.append(f"{family.name}{labels}: no +Inf bucket")
            continue
        counts = [count for _, count in buckets]
        if counts != sorted(counts):
            problems.append(f"{family.name}{labels}: buckets not cumulative: {buckets}")
        if counts[-1] != entry["count"]:
            problems.append(f"{family.name}{labels}: +Inf {counts[-1]} != count {entry['count']}")
        if len(buckets) < 2:
            problems.append(f"{family.name}{labels}: no explicit buckets")
    return problems


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        text = f.read()
    problems = problems_of(text)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

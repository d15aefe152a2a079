#!/usr/bin/env python3
"""Parse an OpenMetrics text exposition (argv[1], a file) with the
Prometheus project's own parser (pip prometheus-client) and print its
samples as JSON: [{"name", "labels", "value"}]. A malformed exposition
raises (exit 1), which fails the test."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = open(sys.argv[1]).read()
out = []
for fam in text_string_to_metric_families(text):
    for s in fam.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value, "type": fam.type})
print(json.dumps(out))

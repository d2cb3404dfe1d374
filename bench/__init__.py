"""tinkex benchmarks: ratios measured side by side in one run (``python -m bench``).

Each benchmark is a module with ``KEY``, ``TITLE`` and ``run(ctx) -> Row``; see
``bench/README.md`` for what each one measures and how to read the table.
"""

from __future__ import annotations

__all__ = ["BENCHMARKS", "OPT_IN"]

#: Benchmark keys in table order, mapped to their module names.
BENCHMARKS: dict[str, str] = {
    "p1": "bench.p1_overhead",
    "p2": "bench.p2_encoding",
    "p3": "bench.p3_training",
    "p4": "bench.p4_latency",
    "p5": "bench.p5_download",
    "p6": "bench.p6_concurrency",
    "p7": "bench.p7_real_model",
    "p8": "bench.p8_server_rate",
    "p9": "bench.p9_decoding",
}

#: Benchmarks run only when named on the command line (P7 needs transformers, peft and a
#: real model the bench environment does not install).
OPT_IN: frozenset[str] = frozenset({"p7"})

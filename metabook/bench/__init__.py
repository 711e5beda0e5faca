"""Benchmarks, run as ``python -m metabook.bench <command>``.

Each command lives in its own module with ``add_arguments(parser)`` and ``run(args)``.
"""
COMMANDS = {
    "speed": "metabook.bench.speed",
    "encoder": "metabook.bench.encoder",
    "episodic": "metabook.bench.episodic",
    "fullway": "metabook.bench.fullway",
    "pretrain": "metabook.bench.pretrain",
}

"""Benchmarks, run as ``python -m metabook.bench <command>``.

* ``speed`` -- one MAML meta-step against ``higher`` and a plain autograd loop
  (``--workload sinusoid`` or ``text``);
* ``encoder`` -- MiniLM encoding throughput against sentence-transformers, and the cache;
* ``episodic`` -- N-way K-shot intent detection on the ProtAugment class splits;
* ``fullway`` -- the DNNC/CPFT full-way K-shot protocol (BANKING77, CLINC150, HWU64, a folder);
* ``overlap`` -- the intents of the other datasets that overlap a target's, to remove first;
* ``pretrain`` -- cross-dataset ProtoNet meta-pre-training of MiniLM, saved for ``--init``;
* ``metapretrain`` -- meta-learning as pre-training against masked-LM, SimCSE and supervised
  pre-training on the same corpus for the same compute, each encoder scored frozen;
* ``report`` -- the README's results tables, rendered from ``benchmarks/results/``.

Each command lives in its own module with ``add_arguments(parser)`` and ``run(args)``.
"""
COMMANDS = {
    "speed": "metabook.bench.speed",
    "encoder": "metabook.bench.encoder",
    "episodic": "metabook.bench.episodic",
    "fullway": "metabook.bench.fullway",
    "overlap": "metabook.bench.overlap",
    "pretrain": "metabook.bench.pretrain",
    "metapretrain": "metabook.bench.metapretrain",
    "report": "metabook.bench.report",
}

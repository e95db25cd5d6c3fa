import pytest
import torch
from tiny import ARCHS, make_model


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_tiny_model_generates(arch):
    model, tok = make_model(arch)
    ids = tok("Human: hello\nAssistant:", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3
    assert torch.isfinite(model(**ids).logits).all()

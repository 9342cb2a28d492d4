"""The packed MiniLM text encode gives the padded encode's vectors: bit for bit in fp32, and in bf16 where the
host's bf16 matmul kernels do not depend on the row count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pretrain import models
from pretrain.encoder import Encoder
from pretrain.precision import autocast
from pretrain.models.two_tower import trim_padding
from retrieval.serve.packed_text import encode_texts_packed, packed_layers, supports_packing, tokenize_to_longest
from tests.retrieval.serve.test_query_encoder import QUERIES, encoder_of, fixture_captions

# lengths from 3 to ~20 tokens in one batch, so most rows are padded; "a" repeated is one extreme
MIXED = ["a", "cat", "a big red cat smiling", "a tiny shiny purple snowman dancing underwater",
         "grinning face with big eyes and a very long caption about nothing in particular at all", "a a a a"]


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_packed_vectors_equal_the_padded_ones(minilm_clip: nn.Module, precision: str) -> None:
    encoder = encoder_of(minilm_clip, precision)
    assert supports_packing(encoder.model)
    texts = MIXED + QUERIES + fixture_captions()[:24]
    compute = autocast(precision, torch.device("cpu"))
    with compute():
        expected = encoder.encode_text(texts)  # (Q, D), padded to the batch's longest
        got = encode_texts_packed(encoder, texts)
        alone = torch.cat([encode_texts_packed(encoder, [t]) for t in MIXED])  # no padding at all
    assert got.dtype == torch.float32 and got.shape == expected.shape
    if precision == "fp32":
        assert torch.equal(got, expected)
    else:  # bit for bit on the AMD host; oneDNN's AMX bf16 kernels round by the matmul's shape (min cosine 0.99998)
        assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.9999
    assert torch.allclose(alone, expected[:len(MIXED)], atol=1e-2)  # another attention length, same maths
    assert len(set(map(tuple, got.tolist()))) == len(set(texts))  # the rows really are the texts' own


def test_tokens_padded_to_the_longest_are_the_tokenizers_own(minilm_clip: nn.Module) -> None:
    encoder = encoder_of(minilm_clip, "fp32")
    long = " ".join(["word"] * 100)  # cut at the context, its last token the separator as before
    for texts in (MIXED + [long], ["cat"], QUERIES, ["  a  Cat\n", "naïve café"]):
        full = encoder.tokenizer(texts)  # (Q, context)
        got = tokenize_to_longest(encoder.tokenizer, texts)
        assert torch.equal(got, trim_padding(full, minilm_clip.text.config.pad_token_id))
    assert tokenize_to_longest(encoder.tokenizer, [long]).shape[1] == encoder.tokenizer.context_length


def test_packed_follows_weights_changed_in_place(minilm_clip: nn.Module) -> None:
    """The packed forward reads the current weights: perturbing the last FFN, then a projection, changes
    its vectors as it changes the padded forward's."""
    encoder = encoder_of(minilm_clip, "fp32")
    before = encode_texts_packed(encoder, MIXED)
    layer = encoder.model.text.transformer.encoder.layer[-1]
    torch.manual_seed(1)
    # in place, after a first encode: the fused q/k/v weights must follow (a constant shift of the
    # output bias would be normalised away by the LayerNorm after it)
    for weight in (layer.output.dense.weight, layer.attention.self.value.weight):
        with torch.no_grad():
            weight.add_(0.1 * torch.randn_like(weight))
        after = encode_texts_packed(encoder, MIXED)
        assert not torch.allclose(before, after, atol=1e-3)
        assert torch.equal(after, encoder.encode_text(MIXED))
        before = after


def test_empty_batch_and_other_towers() -> None:
    torch.manual_seed(0)
    tiny = models.create_open_clip("clip-tiny-64")
    assert not supports_packing(tiny)  # a causal open_clip tower: encoded the ordinary way
    minilm = Encoder.from_model(models.create_open_clip("clip-tiny-64-minilm"), model_name="clip-tiny-64-minilm")
    assert encode_texts_packed(minilm, []).shape == (0, minilm.embed_dim)


def test_layers_run_scripted() -> None:
    """The layer stack compiles to TorchScript (which runs outside the GIL); a fallback to the plain
    function would still give the same vectors, so only this test would notice it."""
    assert isinstance(packed_layers(), torch.jit.ScriptFunction)

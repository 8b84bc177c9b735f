import math

import pytest
import torch

from lamina.errors import ConfigError
from lamina.lm import bits_per_byte, warmup_cosine
from lamina.model import ACTIVATIONS, GPT, GPTConfig


def tiny(**overrides) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=259, block_size=16, n_layer=2, n_head=2, n_embd=32), **overrides})


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("rotary", [False, True])
def test_shapes_for_each_activation(activation, rotary):
    config = tiny(activation=activation, rotary=rotary)
    model = GPT(config)
    idx = torch.randint(0, config.vocab_size, (3, 11))
    record = {}
    logits, loss = model(idx, idx, record=record)
    assert logits.shape == (3, 11, config.padded_vocab_size)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert [a.shape for a in record["mlp"]] == [(3, 11, config.d_ff)] * config.n_layer
    assert [r.shape for r in record["resid"]] == [(3, 11, config.n_embd)] * config.n_layer


def test_recorded_activation_is_what_c_proj_reads():
    model = GPT(tiny(activation="relu"))
    idx = torch.randint(0, 259, (2, 8))
    record = {}
    model(idx, record=record)
    a = record["mlp"][0]
    assert (a >= 0).all() and (a == 0).any()  # relu post-activation: exact zeros exist
    block = model.transformer.h[0]
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(8))
    x = x + block.attn(block.ln_1(x), None)
    torch.testing.assert_close(a, torch.relu(block.mlp.c_fc(block.ln_2(x))))


def test_recording_does_not_change_output():
    model = GPT(tiny())
    idx = torch.randint(0, 259, (2, 16))
    plain, _ = model(idx)
    recorded, _ = model(idx, record={})
    assert torch.equal(plain, recorded)


def test_initial_loss_is_near_uniform():
    config = tiny()
    model = GPT(config)
    idx, targets = torch.randint(0, config.vocab_size, (2, 8, 16))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(config.padded_vocab_size)) < 0.3


def test_causality():
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 259, (1, 12))
    changed = idx.clone()
    changed[0, 8] = (idx[0, 8] + 1) % 259
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_tied_embeddings_and_param_count():
    config = tiny()
    model = GPT(config)
    assert model.lm_head.weight is model.transformer.wte.weight
    d, L, ff = config.n_embd, config.n_layer, config.d_ff
    per_block = 2 * d + (3 * d * d) + d * d + d * ff + ff * d  # 2 layernorm weights, attention, MLP
    expected = config.padded_vocab_size * d + L * per_block + d
    assert model.num_params() == expected
    assert model.flops_per_token() == 6 * expected + 12 * L * d * config.block_size


def test_gated_mlp_keeps_parameter_count_close():
    plain, gated = GPT(tiny(n_embd=192, n_head=2)), GPT(tiny(n_embd=192, n_head=2, activation="swiglu"))
    assert abs(plain.num_params() - gated.num_params()) / plain.num_params() < 0.05


@pytest.mark.parametrize(
    "overrides, key",
    [
        (dict(n_head=3), "model.n_head"),
        (dict(activation="tanh"), "model.activation"),
        (dict(n_layer=0), "model.n_layer"),
        (dict(dropout=1.5), "model.dropout"),
    ],
)
def test_bad_shapes_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        tiny(**overrides)


def test_bits_per_byte_by_hand():
    # 1000 bytes in 250 tokens, mean loss ln(16) nats/token = 4 bits/token -> 4 * 250 / 1000 = 1 bit/byte.
    assert bits_per_byte(math.log(16), 250 / 1000) == pytest.approx(1.0)
    # byte tokenizer, uniform over 256 symbols: 8 bits per byte
    assert bits_per_byte(math.log(256), 1.0) == pytest.approx(8.0)


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100, 0.1) == pytest.approx(0.55)
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 10, 100, 0.1) == pytest.approx(0.1)


# ---- KV cache and generate ----------------------------------------------------------------------


@pytest.mark.parametrize("rotary", [False, True])
def test_cached_decoding_matches_full_recompute(rotary):
    from lamina.model import KVCache

    model = GPT(tiny(rotary=rotary)).eval()
    idx = torch.randint(0, 259, (3, 16))
    full, _ = model(idx)
    cache = KVCache(model.config.n_layer)
    chunks = [model(idx[:, :6], kv_cache=cache)[0], model(idx[:, 6:9], kv_cache=cache)[0]]  # prefill, a chunk
    chunks += [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(9, 16)]  # one token at a time
    assert cache.length == 16
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-5)
    # a shared prefix: its keys repeated for several continuations, gradients flowing into it
    model.train()
    cache = KVCache(model.config.n_layer)
    model(idx[:1, :6], kv_cache=cache)
    tails = idx[:, 6:]
    shared, _ = model(tails, kv_cache=cache.repeat_interleave(3))
    separate, _ = model(torch.cat((idx[:1, :6].expand(3, 6), tails), dim=1))
    torch.testing.assert_close(shared, separate[:, 6:], atol=1e-5, rtol=1e-5)
    shared.sum().backward()
    assert model.transformer.wte.weight.grad is not None


def test_cache_past_block_size_is_refused():
    from lamina.model import KVCache

    model = GPT(tiny()).eval()
    cache = KVCache(model.config.n_layer)
    model(torch.zeros(1, 16, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)


@pytest.mark.parametrize("rotary", [False, True])
def test_greedy_generate_matches_step_by_step_argmax(rotary):
    model = GPT(tiny(rotary=rotary)).eval()
    idx = torch.randint(0, 259, (2, 5))
    tokens, lengths = model.generate(idx, 8, temperature=0)
    seq = idx
    for _ in range(8):
        logits, _ = model(seq)
        seq = torch.cat((seq, logits[:, -1, :259].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(tokens, seq[:, 5:]) and lengths.tolist() == [8, 8]


def test_generate_stops_groups_samples_and_keeps_to_the_vocabulary():
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 259, (2, 4))
    g = torch.Generator().manual_seed(0)
    tokens, lengths = model.generate(idx, 10, temperature=5.0, num_samples=3, generator=g)
    assert tokens.shape == (6, 10) and (tokens < 259).all()  # padded vocabulary ids are never drawn
    greedy, _ = model.generate(idx, 4, temperature=0, num_samples=3)
    assert torch.equal(greedy[0], greedy[2]) and torch.equal(greedy[3], greedy[5])  # rows b*3.. continue idx[b]
    first = greedy[:, 1]  # stop on the second greedy token: every row stops at step 2
    _, stopped = model.generate(idx, 4, temperature=0, stop_id=first.tolist())
    assert (stopped <= 2).all()
    stop = int(greedy[0, 0])
    out, lengths = model.generate(idx[:1], 4, temperature=0, stop_id=stop)
    assert lengths.tolist() == [1] and out.shape == (1, 1)
    with pytest.raises(ValueError, match="block_size"):
        model.generate(idx, 16, temperature=0)

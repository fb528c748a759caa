"""Sampling functions, KV-cache generation and streamed text, on micro models."""

import math
import subprocess
import sys
import threading

import pytest
import torch

from gpt2core.config import SampleConfig, preset
from gpt2core.errors import ConfigError
from gpt2core.generation import (
    REFILL_FRACTION,
    apply_repetition_penalty,
    filter_logits,
    generate,
    make_generator,
    sample_next_token,
    stream_text,
)
from gpt2core.model import GPT

NEG_INF = float("-inf")


@pytest.fixture(autouse=True)
def fp32_generation(monkeypatch):
    """These tests compare generation with plain fp32 forwards token for token, so "auto" must mean
    fp32 here on any CPU; the bf16 inference path has its own tests (test_generate_fast.py)."""
    monkeypatch.setenv("GPT2TUI_CPU_BF16", "0")


def greedy_reference(model, idx, n_new, refill=None):
    """Greedy continuation with full forwards and no cache. Past the context, the window follows
    the documented policy: when it would exceed the context, restart it at the last `refill` tokens."""
    context = model.config.context_length
    refill = refill or max(1, int(context * REFILL_FRACTION))
    seq, start = idx.clone(), 0
    with torch.no_grad():
        for _ in range(n_new):
            if seq.size(1) - start > context:
                start = seq.size(1) - refill
            logits = model(seq[:, start:])[0][:, -1]
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    return seq[:, idx.size(1) :]


def greedy(model, idx, n):
    return generate(model, idx, max_new_tokens=n, temperature=0, repetition_penalty=1.0)


# -- pure functions ----------------------------------------------------------------------------------


def shuffled_logits():
    """Two rows of known probabilities, in scrambled vocabulary order, and the order."""
    probs = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05], [0.05, 0.1, 0.15, 0.3, 0.4]])
    perm = torch.tensor([3, 0, 4, 1, 2])  # column j holds the token ranked perm[j] in row 0
    return probs.log()[:, perm], perm


def kept(filtered):
    return [sorted(torch.nonzero(row > NEG_INF).flatten().tolist()) for row in filtered]


def column_of(perm, ranks):
    """Vocabulary columns holding the tokens at these positions of the unshuffled rows."""
    return sorted(int((perm == r).nonzero()) for r in ranks)


def test_top_k_keeps_the_k_most_likely():
    logits, perm = shuffled_logits()
    out = filter_logits(logits, temperature=1.0, top_k=2)
    assert kept(out) == [column_of(perm, [0, 1]), column_of(perm, [4, 3])]
    assert torch.allclose(out[out > NEG_INF], logits[out > NEG_INF])


@pytest.mark.parametrize(
    "top_p, row0_ranks",
    [(0.5, [0]), (0.6, [0, 1]), (0.7, [0, 1]), (0.71, [0, 1, 2]), (1.0, [0, 1, 2, 3, 4])],
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, row0_ranks):
    logits, perm = shuffled_logits()
    assert kept(filter_logits(logits, temperature=1.0, top_p=top_p))[0] == column_of(perm, row0_ranks)


def test_top_p_applies_to_the_renormalised_top_k():
    logits, perm = shuffled_logits()
    # Alone, top_p 0.8 needs three tokens (0.5 + 0.2 + 0.15); after top_k 3 they are renormalised
    # to 0.59, 0.24, 0.18 and two reach 0.8.
    assert kept(filter_logits(logits, top_p=0.8))[0] == column_of(perm, [0, 1, 2])
    assert kept(filter_logits(logits, top_k=3, top_p=0.8))[0] == column_of(perm, [0, 1])


def test_min_p_drops_tokens_below_a_fraction_of_the_best():
    logits, perm = shuffled_logits()
    # threshold 0.25 * 0.5 = 0.125 keeps 0.5, 0.2, 0.15; row 1: 0.25 * 0.4 = 0.1 keeps 0.4, 0.3, 0.15, 0.1
    out = kept(filter_logits(logits, min_p=0.25))
    assert out[0] == column_of(perm, [0, 1, 2])
    assert out[1] == column_of(perm, [4, 3, 2, 1])


def test_temperature_scales_and_zero_is_greedy():
    logits, perm = shuffled_logits()
    assert torch.allclose(filter_logits(logits, temperature=0.5), logits * 2)
    greedy_only = filter_logits(logits, temperature=0)
    assert kept(greedy_only) == [column_of(perm, [0]), column_of(perm, [4])]
    assert torch.equal(sample_next_token(logits, temperature=0), logits.argmax(-1))


def test_samples_follow_the_filtered_distribution():
    logits, perm = shuffled_logits()
    rows = logits[:1].expand(4000, -1)
    draws = sample_next_token(rows, temperature=1.0, top_k=3, generator=make_generator(0))
    allowed = column_of(perm, [0, 1, 2])
    assert set(draws.tolist()) == set(allowed)
    frequency = torch.bincount(draws, minlength=5).float() / len(draws)
    expected = torch.tensor([0.5, 0.2, 0.15]) / 0.85
    for rank, p in zip([0, 1, 2], expected):
        column = int((perm == rank).nonzero())
        assert abs(frequency[column] - p) < 0.03


@pytest.mark.parametrize(
    "settings",
    [{"temperature": -0.1}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}, {"min_p": 1.0}],
)
def test_bad_sampling_settings_are_config_errors(settings):
    logits, _ = shuffled_logits()
    with pytest.raises(ConfigError):
        filter_logits(logits, **settings)
    with pytest.raises(ConfigError):
        sample_next_token(logits, **settings)


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    history = torch.tensor([[0, 1, 1]])
    assert torch.equal(apply_repetition_penalty(logits, history, 2.0), torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
    # window 1: only the last token (1) counts, and only once although it appears twice
    assert torch.equal(apply_repetition_penalty(logits, history, 2.0, window=1), torch.tensor([[2.0, -2.0, 0.5, 3.0]]))
    assert torch.equal(apply_repetition_penalty(logits, history, 1.0), logits)
    assert torch.equal(logits, torch.tensor([[2.0, -1.0, 0.5, 3.0]]))  # the input is untouched


# -- generate() --------------------------------------------------------------------------------------


def test_cached_greedy_generation_equals_full_forwards(sharp_model):
    idx = torch.randint(0, sharp_model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    out = greedy(sharp_model, idx, 15)
    assert out.shape == (2, 15) and out.dtype == torch.long
    assert torch.equal(out, greedy_reference(sharp_model, idx, 15))


def test_generation_continues_past_the_context_length(sharp_model):
    context = sharp_model.config.context_length  # 32
    idx = torch.randint(0, sharp_model.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(2))
    out = greedy(sharp_model, idx, 3 * context)  # the cache fills and is refilled several times
    assert out.shape == (1, 3 * context)
    assert torch.equal(out, greedy_reference(sharp_model, idx, 3 * context))


def test_prompt_filling_the_whole_context_still_generates(sharp_model):
    context = sharp_model.config.context_length
    idx = torch.randint(0, sharp_model.config.vocab_size, (1, context + 7), generator=torch.Generator().manual_seed(3))
    out = greedy(sharp_model, idx, 10)
    # the prompt keeps its last `context` tokens
    assert torch.equal(out, greedy_reference(sharp_model, idx[:, -context:], 10))


def test_batch_rows_match_single_rows(sharp_model):
    idx = torch.randint(0, sharp_model.config.vocab_size, (3, 6), generator=torch.Generator().manual_seed(4))
    batch = greedy(sharp_model, idx, 12)
    for row in range(3):
        assert torch.equal(batch[row], greedy(sharp_model, idx[row : row + 1], 12)[0])


def test_seed_makes_sampling_reproducible_without_the_global_rng(micro_model):
    idx = torch.zeros(2, 4, dtype=torch.long)
    state = torch.get_rng_state()
    a = generate(micro_model, idx, max_new_tokens=30, temperature=1.0, seed=7)
    b = generate(micro_model, idx, max_new_tokens=30, temperature=1.0, seed=7)
    c = generate(micro_model, idx, max_new_tokens=30, temperature=1.0, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


def test_generate_validates_through_sample_config(micro_model):
    idx = torch.zeros(1, 3, dtype=torch.long)
    for bad in ({"temperature": -1}, {"top_p": 0}, {"top_k": -2}, {"max_new_tokens": 0}):
        with pytest.raises(ConfigError):
            generate(micro_model, idx, **bad)
    with pytest.raises(TypeError, match="unexpected keyword"):
        generate(micro_model, idx, temprature=0.5)


def test_result_is_an_ordinary_tensor_and_1d_in_gives_1d_out(micro_model):
    out = generate(micro_model, torch.tensor([1, 2, 3]), max_new_tokens=5, seed=0)
    assert out.shape == (5,)
    assert not out.is_inference()
    out += 1  # callers may modify it


def test_eos_id_ends_rows_and_pads_them(micro_model, char_tokenizer):
    eos = char_tokenizer.eos_id
    force_token(micro_model, eos)
    idx = torch.ones(2, 3, dtype=torch.long)
    assert greedy(micro_model, idx, 8).shape == (2, 8)  # without eos_id: exactly max_new_tokens
    out = generate(micro_model, idx, max_new_tokens=8, temperature=0, eos_id=eos)
    assert out.tolist() == [[eos], [eos]]


def test_training_mode_is_restored_and_dropout_off_while_generating():
    torch.manual_seed(0)
    model = GPT(preset("micro").replace(dropout=0.5)).train()
    idx = torch.zeros(1, 4, dtype=torch.long)
    first, second = greedy(model, idx, 10), greedy(model, idx, 10)
    assert torch.equal(first, second)
    assert model.training


def test_stop_event_ends_generation(micro_model):
    event = threading.Event()
    event.set()
    assert generate(micro_model, torch.zeros(1, 2, dtype=torch.long), max_new_tokens=10, stop_event=event).shape == (1, 0)


def test_gpt2core_generate_is_the_function_even_after_importing_the_module():
    code = (
        "import inspect, torch\n"
        "from gpt2core.generation import stream_text\n"
        "import gpt2core\n"
        "from gpt2core.config import preset\n"
        "from gpt2core.model import GPT\n"
        "m = GPT(preset('micro')).eval()\n"
        "out = gpt2core.generate(m, torch.zeros(1, 2, dtype=torch.long), max_new_tokens=3, temperature=0)\n"
        "params = inspect.signature(gpt2core.generate).parameters.values()\n"
        "print(inspect.isfunction(gpt2core.generate), tuple(out.shape))\n"
        "print([p.name for p in params if p.kind is p.KEYWORD_ONLY])\n"
        "print([p.kind for p in params if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [
        "True (1, 3)",
        "['min_p', 'repetition_window', 'eos_id', 'generator', 'stop_event', 'vocab_limit', 'precision']",
        "[]",
    ]


def test_generate_refuses_an_unknown_keyword(micro_model):
    with pytest.raises(TypeError, match="top_q"):
        generate(micro_model, torch.zeros(1, 2, dtype=torch.long), max_new_tokens=1, top_q=0.5)


# -- stream_text() -----------------------------------------------------------------------------------


def force_token(model, token_id):
    """Make every next-token prediction ``token_id``: the final LayerNorm outputs a constant
    that points along that token's (enlarged) embedding."""
    with torch.no_grad():
        wte = model.transformer.wte.weight
        wte[token_id] = 10 * wte[token_id] / wte[token_id].norm()
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(wte[token_id])


def config(**changes):
    return SampleConfig(**{"temperature": 0.0, "repetition_penalty": 1.0, "max_new_tokens": 40, **changes})


def test_stream_equals_generate_decoded(micro_model, char_tokenizer):
    settings = config(temperature=1.0, top_k=0, top_p=1.0, seed=11, stop_at_eos=False)
    stream = stream_text(micro_model, char_tokenizer, "The quick", settings)
    pieces = list(stream)
    idx = torch.tensor([char_tokenizer.encode("The quick")])
    ids = generate(micro_model, idx, max_new_tokens=40, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=11)
    assert "".join(pieces) == stream.text == char_tokenizer.decode(ids[0].tolist())
    assert stream.finish_reason == "length"
    assert stream.new_tokens == 40
    assert stream.prompt_tokens == 9 and stream.truncated_tokens == 0
    assert stream.tokens_per_sec > 0


def test_stop_string_ends_the_text_before_it(sharp_model, char_tokenizer):
    full = stream_text(sharp_model, char_tokenizer, "To be", config(stop_at_eos=False)).read()
    stop = full[5:8]  # inside the text, not at its start; the model emits one character per token
    expected = full[: full.find(stop)]
    stream = stream_text(sharp_model, char_tokenizer, "To be", config(stop=("zzzz-never", stop), stop_at_eos=False))
    pieces = list(stream)
    assert "".join(pieces) == stream.text == expected
    assert stream.finish_reason == "stop"
    assert stop not in stream.text


def test_text_that_only_starts_a_stop_string_is_released_at_the_end(sharp_model, char_tokenizer):
    full = stream_text(sharp_model, char_tokenizer, "To be", config(stop_at_eos=False)).read()
    almost = full[-3:] + "\x00"  # the text ends with the start of this stop string, which never completes
    stream = stream_text(sharp_model, char_tokenizer, "To be", config(stop=(almost,), stop_at_eos=False))
    assert stream.read() == full
    assert stream.finish_reason == "length"


def test_eos_ends_the_stream_unless_told_otherwise(micro_model, char_tokenizer):
    force_token(micro_model, char_tokenizer.eos_id)
    stream = stream_text(micro_model, char_tokenizer, "abc", config())
    assert stream.read() == "" and stream.finish_reason == "eos" and stream.new_tokens == 0
    stream = stream_text(micro_model, char_tokenizer, "abc", config(max_new_tokens=2, stop_at_eos=False))
    assert stream.read() == "<|endoftext|><|endoftext|>" and stream.finish_reason == "length"


def test_padding_ids_beyond_the_tokenizer_are_never_sampled(char_tokenizer):
    torch.manual_seed(0)
    model = GPT(preset("micro").replace(vocab_size=char_tokenizer.vocab_size + 20)).eval()
    padding_id = char_tokenizer.vocab_size + 5
    force_token(model, padding_id)
    assert greedy(model, torch.ones(1, 2, dtype=torch.long), 3).tolist() == [[padding_id] * 3]  # the trap works
    stream = stream_text(model, char_tokenizer, "abc", config(max_new_tokens=20, stop_at_eos=False))
    stream.read()
    assert stream.new_tokens == 20
    model.tokenizer = char_tokenizer  # generate() reads the limit from model.tokenizer
    sampled = generate(model, torch.ones(4, 2, dtype=torch.long), max_new_tokens=20, temperature=2.0, top_k=0, top_p=1.0, seed=0)
    assert int(sampled.max()) < char_tokenizer.vocab_size


def test_long_prompt_is_truncated_and_reported(micro_model, char_tokenizer, sample_text):
    context = micro_model.config.context_length
    prompt = sample_text[:50]
    stream = stream_text(micro_model, char_tokenizer, prompt, config(max_new_tokens=10))
    assert (stream.prompt_tokens, stream.truncated_tokens) == (50, 50 - context)
    kept_tail = char_tokenizer.decode(char_tokenizer.encode(prompt)[-context:])
    assert stream.read() == stream_text(micro_model, char_tokenizer, kept_tail, config(max_new_tokens=10)).read()


def test_empty_prompt_starts_from_eos(sharp_model, char_tokenizer):
    stream = stream_text(sharp_model, char_tokenizer, "", config(max_new_tokens=12, stop_at_eos=False))
    ids = greedy(sharp_model, torch.tensor([[char_tokenizer.eos_id]]), 12)
    assert stream.read() == char_tokenizer.decode(ids[0].tolist())
    assert stream.prompt_tokens == 0
    assert stream.text != char_tokenizer.decode(greedy(sharp_model, torch.tensor([[1]]), 12)[0].tolist())


def test_stop_event_cancels_promptly(micro_model, char_tokenizer):
    event = threading.Event()
    stream = stream_text(micro_model, char_tokenizer, "The", config(max_new_tokens=500, stop_at_eos=False), stop_event=event)
    for i, _ in enumerate(stream):
        if i == 4:
            event.set()
    assert stream.finish_reason == "cancelled"
    assert stream.new_tokens == 5


def test_closing_a_stream_cancels_it_and_restores_training_mode(micro_model, char_tokenizer):
    micro_model.train()
    stream = stream_text(micro_model, char_tokenizer, "The", config(max_new_tokens=500))
    next(stream)
    stream.close()
    assert stream.finish_reason == "cancelled"
    assert micro_model.training


def test_streamed_bpe_pieces_are_whole_characters(bpe_tokenizer):
    torch.manual_seed(0)
    model = GPT(preset("micro").replace(vocab_size=bpe_tokenizer.vocab_size)).eval()
    # A random model over a byte-level vocabulary produces byte tokens that split characters.
    stream = stream_text(model, bpe_tokenizer, "naïve café ", SampleConfig(max_new_tokens=80, temperature=1.5, top_k=0, top_p=1.0, seed=3, stop_at_eos=False))
    pieces = list(stream)
    ids = generate(model, torch.tensor([bpe_tokenizer.encode("naïve café ")]), max_new_tokens=80, temperature=1.5, top_k=0, top_p=1.0, repetition_penalty=1.2, seed=3)
    assert "".join(pieces) == bpe_tokenizer.decode(ids[0].tolist())
    assert math.isfinite(stream.tokens_per_sec)


def test_a_full_cache_is_refilled_with_the_most_recent_window(sharp_model):
    assert sharp_model.config.context_length == 32 and int(32 * REFILL_FRACTION) == 24
    calls = []  # (ids fed, positions already cached) of every forward
    original = sharp_model.forward

    def recording_forward(idx, *args, cache=None, **kwargs):
        calls.append((idx.clone(), cache.length))
        return original(idx, *args, cache=cache, **kwargs)

    sharp_model.forward = recording_forward
    prompt = torch.randint(0, sharp_model.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(5))
    out = greedy(sharp_model, prompt, 30)
    seq = torch.cat([prompt, out], dim=1)
    # prefill 20; one position per token until 32 are cached; then the last 24 again, and so on.
    # The last token is never fed (its logits would not be used).
    expected = [(20, 0)] + [(1, c) for c in range(20, 32)] + [(24, 0)] + [(1, c) for c in range(24, 32)]
    expected += [(24, 0)] + [(1, c) for c in range(24, 31)]
    assert [(ids.size(1), cached) for ids, cached in calls] == expected
    assert torch.equal(calls[13][0], seq[:, 33 - 24 : 33])  # the refill holds the newest 24 tokens
    assert torch.equal(calls[0][0], prompt)

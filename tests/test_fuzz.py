"""Property-based tests (hypothesis) for what reads untrusted or arbitrary input:

- the byte-level `gpt2` tokenizer (built offline: a BPE trained here, saved as a Hugging Face
  GPT2TokenizerFast directory and loaded the way `--tokenizer gpt2` loads one) round-trips any
  Unicode text, and its streaming decoder never shows a broken character. (The `bpe` kind's
  round trip and streaming are tests/test_tokenizer.py's hypothesis tests.)
- sampling keeps a valid distribution for any logits and any temperature / top-k / top-p /
  min-p in range: finite, non-negative, summing to one, never empty, the best token kept;
- the checkpoint readers (manifest, config, weights) given arbitrary bytes or arbitrary JSON
  raise nothing but CheckpointError;
- every reader of untrusted JSON (the one reader, gpt2core.safe_json; manifest, config,
  trainer state, status.json, metrics.jsonl) and the tokenizer-file reader, given arbitrary
  bytes and nesting up to 150,000 deep: only their own one-line errors (UnreadableJSON,
  CheckpointError, TokenizerError), and a bad status.json never hides a good run.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gpt2core.checkpoint import (
    MANIFEST,
    load_checkpoint,
    read_checkpoint_info,
    read_manifest,
    save_checkpoint,
    verify_checkpoint,
)
from gpt2core.errors import CheckpointError
from gpt2core.generation import filter_logits, sample_next_token
from gpt2core.tokenizer import EOS_TOKEN
from tokenizer_support import assert_streams_whole_characters, stream_pieces

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# -- tokenizers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_kind(tmp_path_factory, sample_text):
    """A `gpt2`-kind tokenizer: byte-level BPE in a GPT2TokenizerFast directory, read back
    through gpt2core.tokenizer.gpt2_tokenizer (the hub is offline in tests)."""
    from transformers import GPT2TokenizerFast

    from gpt2core.tokenizer import gpt2_tokenizer, train_bpe

    root = tmp_path_factory.mktemp("gpt2-kind")
    trained = train_bpe([sample_text, "naïve café, 東京, привет, 😀 👍🏽 — ‘quotes’\n\ttabs"], 400)
    trained.save(root / "trained")
    GPT2TokenizerFast(tokenizer_file=str(root / "trained" / "tokenizer.json"), eos_token=EOS_TOKEN).save_pretrained(root / "hf")
    tokenizer = gpt2_tokenizer(str(root / "hf"))
    assert tokenizer.kind in ("gpt2", "bpe")  # byte-level either way; "gpt2" is kept for OpenAI's own vocabulary
    return tokenizer


@FUZZ
@given(text=st.text(max_size=300))
def test_gpt2_kind_round_trips_any_text(gpt2_kind, text):
    assert gpt2_kind.decode(gpt2_kind.encode(text)) == text


@FUZZ
@given(parts=st.lists(st.one_of(st.text(max_size=40), st.just(EOS_TOKEN), st.sampled_from(["\r\n", "\u2028", "\x00", "\ufeff", "e\u0301"])), max_size=8))
def test_gpt2_kind_round_trips_special_and_odd_characters(gpt2_kind, parts):
    text = "".join(parts)
    assert gpt2_kind.decode(gpt2_kind.encode(text)) == text


@FUZZ
@given(text=st.text(max_size=200))
def test_gpt2_kind_streaming_never_shows_a_broken_character(gpt2_kind, text):
    assert_streams_whole_characters(gpt2_kind, text)


@FUZZ
@given(data=st.data())
def test_gpt2_kind_streaming_any_ids_equals_the_whole_decode(gpt2_kind, data):
    ids = data.draw(st.lists(st.integers(0, gpt2_kind.vocab_size - 1), max_size=60))
    assert "".join(stream_pieces(gpt2_kind, ids)) == gpt2_kind.decode(ids)


# -- sampling ------------------------------------------------------------------------------------


@st.composite
def logits_and_settings(draw):
    rows, vocab = draw(st.integers(1, 3)), draw(st.integers(1, 48))
    finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)
    values = draw(st.lists(st.one_of(finite, finite, finite, st.just(-math.inf)), min_size=rows * vocab, max_size=rows * vocab))
    logits = torch.tensor(values, dtype=torch.float32).view(rows, vocab)
    for r in range(rows):  # a row of only -inf is no distribution to start from
        assume(torch.isfinite(logits[r]).any())
    temperature = draw(st.one_of(st.just(0.0), st.floats(1e-3, 100.0)))
    top_k = draw(st.integers(0, vocab + 3))
    top_p = draw(st.one_of(st.just(1.0), st.floats(1e-6, 1.0, exclude_min=False)))
    min_p = draw(st.one_of(st.just(0.0), st.floats(0.0, 0.999)))
    return logits, temperature, top_k, top_p, min_p


@settings(max_examples=150, deadline=None)
@given(case=logits_and_settings(), seed=st.integers(0, 2**31 - 1))
def test_filtered_logits_are_always_a_distribution(case, seed):
    logits, temperature, top_k, top_p, min_p = case
    scores = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    probs = F.softmax(scores, dim=-1)
    assert torch.isfinite(probs).all() and (probs >= 0).all()
    assert torch.allclose(probs.sum(-1), torch.ones(logits.size(0)), atol=1e-5)
    best = logits == logits.max(-1, keepdim=True).values
    assert ((probs * best).sum(-1) > 0).all()  # a most likely token always survives (any one of a tie)
    kept = (probs > 0).sum(-1)
    if temperature == 0:
        assert (kept == 1).all()
    elif top_k > 0:
        assert (kept <= top_k).all()
    generator = torch.Generator().manual_seed(seed)
    drawn = sample_next_token(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, generator=generator)
    assert drawn.shape == (logits.size(0),)
    assert (probs.gather(-1, drawn[:, None]) > 0).all()  # only tokens that kept some probability are drawn


# -- checkpoint readers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory, char_tokenizer):
    from gpt2core.config import preset
    from gpt2core.model import GPT

    model = GPT(preset("micro").replace(vocab_size=char_tokenizer.vocab_size))
    return save_checkpoint(tmp_path_factory.mktemp("fuzz") / "ck", model, char_tokenizer, meta={"step": 1})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
file_names = st.one_of(
    st.sampled_from(["model.safetensors", "config.json", "tokenizer.json", "..", ".", "", "a/b", "a\\b", "\x00", "x\x00y", "/etc/passwd", "x" * 300]),
    st.text(max_size=20),
)
manifest_like = st.fixed_dictionaries(
    {
        "format_version": st.one_of(st.just(1), json_values),
        "files": st.one_of(
            st.dictionaries(file_names, st.one_of(json_values, st.fixed_dictionaries({"bytes": st.one_of(st.integers(-5, 10**6), json_values), "sha256": st.one_of(st.text(max_size=64), json_values)})), max_size=5),
            json_values,
        ),
    }
)


def _only_checkpoint_errors(call) -> None:
    try:
        call()
    except CheckpointError:
        pass


@FUZZ
@given(raw=st.binary(max_size=400))
def test_manifest_reader_on_arbitrary_bytes(saved, raw):
    original = (saved / MANIFEST).read_bytes()
    try:
        (saved / MANIFEST).write_bytes(raw)
        _only_checkpoint_errors(lambda: read_manifest(saved))
        _only_checkpoint_errors(lambda: verify_checkpoint(saved))
    finally:
        (saved / MANIFEST).write_bytes(original)


@FUZZ
@given(manifest=st.one_of(json_values, manifest_like), extra=st.dictionaries(file_names, json_values | st.fixed_dictionaries({"bytes": st.integers(0, 99), "sha256": st.text(max_size=8)}), max_size=3))
def test_manifest_reader_on_arbitrary_json(saved, manifest, extra):
    original = (saved / MANIFEST).read_bytes()
    if extra:  # the real manifest with entries added: past the required-files checks, into the file checks
        manifest = json.loads(original)
        manifest["files"].update(extra)
    try:
        (saved / MANIFEST).write_text(json.dumps(manifest))
        _only_checkpoint_errors(lambda: read_manifest(saved))
        _only_checkpoint_errors(lambda: verify_checkpoint(saved, full=True))
        _only_checkpoint_errors(lambda: verify_checkpoint(saved, full=False))
    finally:
        (saved / MANIFEST).write_bytes(original)


@FUZZ
@given(config=st.one_of(json_values, st.fixed_dictionaries({"format_version": st.one_of(st.just(1), json_values), "model": st.one_of(json_values, st.dictionaries(st.sampled_from(["vocab_size", "d_model", "num_heads", "num_layers", "d_ff", "context_length", "dropout", "bias", "layer_norm_eps", "other"]), json_values)), "tokenizer": json_values, "meta": json_values})))
def test_config_reader_on_arbitrary_json(saved, config):
    original = (saved / "config.json").read_bytes()
    try:
        (saved / "config.json").write_text(json.dumps(config))
        _only_checkpoint_errors(lambda: read_checkpoint_info(saved))
        _only_checkpoint_errors(lambda: load_checkpoint(saved, verify=False))
    finally:
        (saved / "config.json").write_bytes(original)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=300), st.binary(max_size=40).map(lambda b: len(b).to_bytes(8, "little") + b)))
def test_weights_reader_on_arbitrary_bytes(saved, raw):
    original = (saved / "model.safetensors").read_bytes()
    try:
        (saved / "model.safetensors").write_bytes(raw)  # the second kind claims a header of its own length
        _only_checkpoint_errors(lambda: load_checkpoint(saved, verify=False))
    finally:
        (saved / "model.safetensors").write_bytes(original)


# -- every reader of untrusted JSON: arbitrary bytes and arbitrary depth ---------------------------------

# Nesting from shallow to far past the parser's recursion limit, in arrays, objects or both,
# closed or left open (a torn write), with junk around it.
deep_json = st.builds(
    lambda depth, opener, closed, tail: (opener * depth + ("1" + {"[": "]", '{"a":': "}", '[{"a":': "}]"}[opener] * depth if closed else "")).encode() + tail,
    st.integers(1, 150_000),
    st.sampled_from(["[", '{"a":', '[{"a":']),
    st.booleans(),
    st.binary(max_size=8),
)
untrusted_bytes = st.one_of(st.binary(max_size=400), deep_json, json_values.map(lambda v: json.dumps(v).encode()))


@FUZZ
@given(raw=untrusted_bytes)
def test_the_json_reader_raises_only_unreadable_json(tmp_path_factory, raw):
    from gpt2core.safe_json import MAX_DEPTH, UnreadableJSON, json_depth, read_json_file

    path = tmp_path_factory.mktemp("json") / "f.json"
    path.write_bytes(raw)
    try:
        value = read_json_file(path, max_bytes=1 << 20)
    except UnreadableJSON as exc:
        assert str(path) in str(exc)
    else:
        assert json_depth(value) <= MAX_DEPTH


@FUZZ
@given(raw=untrusted_bytes)
def test_manifest_and_config_readers_on_arbitrary_depth(saved, raw):
    for name in (MANIFEST, "config.json"):
        original = (saved / name).read_bytes()
        try:
            (saved / name).write_bytes(raw)
            _only_checkpoint_errors(lambda: read_checkpoint_info(saved))
            _only_checkpoint_errors(lambda: load_checkpoint(saved, verify=False))
        finally:
            (saved / name).write_bytes(original)


@FUZZ
@given(raw=untrusted_bytes)
def test_status_reader_never_raises_on_arbitrary_bytes_and_depth(tmp_path_factory, raw):
    from gpt2core.rundir import list_runs, read_run

    root = tmp_path_factory.mktemp("runs")
    (root / "bad").mkdir()
    (root / "bad" / "status.json").write_bytes(raw)
    (root / "good").mkdir()
    (root / "good" / "status.json").write_text(json.dumps({"state": "finished", "step": 3, "started": 1.0}))
    assert read_run(root / "bad").name == "bad"
    runs = {r.name: r for r in list_runs(root)}
    assert set(runs) == {"bad", "good"} and runs["good"].state == "finished" and runs["good"].step == 3


@FUZZ
@given(lines=st.lists(untrusted_bytes, max_size=4))
def test_metrics_tail_never_raises_on_arbitrary_lines(tmp_path_factory, lines):
    from gpt2core.rundir import MetricsTail

    path = tmp_path_factory.mktemp("metrics") / "metrics.jsonl"
    good = json.dumps({"type": "step", "step": 1}).encode()
    path.write_bytes(b"\n".join([*(line.replace(b"\n", b" ") for line in lines), good]) + b"\n")
    records = MetricsTail(path).read_new()
    assert all(isinstance(r, dict) for r in records) and records[-1] == {"type": "step", "step": 1}


@pytest.fixture(scope="module")
def saved_with_state(tmp_path_factory, char_tokenizer):
    from gpt2core.config import preset
    from gpt2core.model import GPT

    model = GPT(preset("micro").replace(vocab_size=char_tokenizer.vocab_size))
    state = {"format": 1, "step": 2, "sampler": {"generator": torch.zeros(4, dtype=torch.uint8), "batches_drawn": 2}}
    return save_checkpoint(tmp_path_factory.mktemp("fuzz-state") / "ck", model, char_tokenizer, meta={"step": 2}, trainer_state=state)


@FUZZ
@given(raw=st.one_of(untrusted_bytes, st.fixed_dictionaries({"format_version": st.just(1), "state": json_values}).map(lambda v: json.dumps(v).encode())))
def test_trainer_state_reader_raises_only_checkpoint_errors(saved_with_state, raw):
    from gpt2core.checkpoint import load_trainer_state
    from gpt2core.checkpoint import check_trainer_state

    path = saved_with_state / "trainer_state.json"
    original = path.read_bytes()
    try:
        path.write_bytes(raw)
        try:
            state = load_trainer_state(saved_with_state)
        except CheckpointError:
            return
        if isinstance(state, dict):
            _only_checkpoint_errors(lambda: check_trainer_state(state, path))
    finally:
        path.write_bytes(original)


@FUZZ
@given(edit=st.lists(st.tuples(st.text(min_size=1, max_size=3), st.integers(-3, 400)), min_size=1, max_size=4), raw=st.one_of(st.none(), untrusted_bytes))
def test_tokenizer_file_reader_raises_only_tokenizer_errors(tmp_path_factory, bpe_tokenizer, edit, raw):
    """Arbitrary bytes, or a real byte-level vocabulary with tokens re-numbered or added (gaps,
    duplicates, tokens outside the byte alphabet): a TokenizerError naming the file, or a
    tokenizer whose every id decodes."""
    from gpt2core.errors import TokenizerError
    from gpt2core.tokenizer import Tokenizer

    folder = tmp_path_factory.mktemp("tok")
    spec = bpe_tokenizer.save(folder)
    if raw is not None:
        (folder / "tokenizer.json").write_bytes(raw)
    else:
        data = json.loads((folder / "tokenizer.json").read_text())
        data["model"]["vocab"].update(dict(edit))
        (folder / "tokenizer.json").write_text(json.dumps(data))
    try:
        tokenizer = Tokenizer.load(folder, {"kind": "bpe", "file": spec["file"]})
    except TokenizerError as exc:
        assert "tokenizer" in str(exc)
    else:
        assert all(isinstance(tokenizer.token_bytes(i), bytes) for i in range(tokenizer.vocab_size))

"""Sampling as pure functions, and generation with the KV cache, as token ids or streamed text.

Three layers, each usable alone:

- ``filter_logits`` / ``sample_next_token`` / ``apply_repetition_penalty``: pure functions on a
  (B, V) logits tensor. Order (the same as Hugging Face's): repetition penalty, temperature,
  top-k, top-p, min-p, then a draw from the torch.Generator passed in (never the global RNG).
- ``iter_tokens``: yields the next (B,) token ids one step at a time. The prompt is run once
  (prefill) into a KV cache; each new token then costs one position's compute. When the cache is
  full (the context length is reached), the most recent 3/4 of a context window is run again into
  a fresh cache and generation goes on: positions are learned embeddings, so cached keys cannot
  be shifted to new positions, and re-running 3/4 of the window once every 1/4 window keeps the
  cost per token bounded while the model always sees at least 3/4 of a window of history.
- ``generate`` (ids in, new ids out, batches allowed) and ``stream_text`` (text in, an iterator of
  text pieces out: ``TextStream``), which knows the tokenizer: it never yields half a UTF-8
  character, never samples ids the tokenizer cannot decode, and handles stop strings and EOS.

Each takes a ``precision`` for the weights (``inference_precision``): "auto" runs a bf16 copy of
the model (``inference_model``) where the device computes bf16 natively, with its linear weights
prepacked for oneDNN on such CPUs (``gpt2core.cpu_linear``); "fp32" runs the model itself, which
gives exactly transformers' numbers. Sampling always runs on fp32 logits.
"""

from __future__ import annotations

import copy
import threading
import time
import weakref
from typing import Iterator

import torch
import torch.nn.functional as F

from gpt2core.choices import PRECISIONS
from gpt2core.config import SampleConfig
from gpt2core.cpu_linear import can_pack, pack_linears
from gpt2core.errors import ConfigError
from gpt2core.model import GPT
from gpt2core.precision import cpu_has_native_bf16
from gpt2core.tokenizer import Tokenizer

# After the cache fills up, re-run this fraction of the context window (see the module docstring).
REFILL_FRACTION = 0.75
# top-p without top-k: sort only this many of the best tokens, and the whole vocabulary only when
# they hold less than top_p of the probability (rare for a trained model: a flat distribution).
TOP_P_PARTIAL = 1024
# Weights for inference: "auto" picks the fastest the device computes natively (``inference_precision``);
# the words are training's (gpt2core.choices), listed once.
INFERENCE_PRECISIONS = PRECISIONS
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# On a CPU, "auto" keeps models below this many parameters in fp32: their weights sit in cache, so
# halving their bytes saves nothing, while each bf16 operation costs more (a 0.03M-parameter model
# generated 3-5x slower in bf16 on an avx512_bf16 CPU; docs/PERFORMANCE.md has the numbers).
CPU_BF16_MIN_PARAMS = 50_000_000


# -- pure sampling functions -----------------------------------------------------------------------


def _candidates(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, min_p: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tokens still in the running after temperature, top-k, top-p and min-p.

    Returns (scores, ids): ``scores`` (B, K) temperature-scaled logits with -inf where a filter
    removed the token; ``ids`` (B, K) the vocabulary ids of those columns, or None when the
    columns are the whole vocabulary in order. With top-k on, only K columns are ever sorted or
    soft-maxed, which is what keeps a 50k vocabulary cheap per token.
    """
    scores = logits.float()
    if temperature != 1.0:
        scores = scores / temperature
    vocab = scores.size(-1)
    ids = None
    probs = None
    if 0 < top_k < vocab:
        scores, ids = torch.topk(scores, top_k, dim=-1)  # (B, K), sorted descending
    elif top_p < 1.0:
        scores, ids, probs = _best_holding(scores, top_p)  # (B, K) sorted descending, K <= V
    if top_p < 1.0:
        if probs is None:
            probs = F.softmax(scores, dim=-1)  # within the top k, renormalised (as Hugging Face does)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the better tokens; 0 for the best
        scores = scores.masked_fill(mass_before >= top_p, float("-inf"))  # sorted, so this drops a tail
    if min_p > 0.0:
        probs = F.softmax(scores, dim=-1)
        scores = scores.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), float("-inf"))
    return scores, ids


def _best_holding(scores: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, V) scores -> (best, ids, probs): each row's best K scores sorted descending, their ids,
    and their probabilities under the whole vocabulary's softmax, with K large enough that every
    row's top-p set lies inside. A partial sort (topk) first; the full sort only when the best
    TOP_P_PARTIAL tokens hold less than top_p in some row. The token after the K-th would be kept
    only if the K tokens before it held less than top_p, so nothing beyond them could survive."""
    log_total = scores.logsumexp(dim=-1, keepdim=True)  # (B, 1)
    if scores.size(-1) > TOP_P_PARTIAL:
        best, ids = torch.topk(scores, TOP_P_PARTIAL, dim=-1)  # (B, K)
        probs = (best - log_total).exp()  # (B, K)
        if bool((probs.sum(dim=-1) >= top_p).all()):
            return best, ids, probs
    best, ids = torch.sort(scores, dim=-1, descending=True)  # (B, V)
    return best, ids, (best - log_total).exp()


def _validate(temperature: float, top_k: int, top_p: float, min_p: float) -> None:
    # The rules live in SampleConfig; building one raises ConfigError with the user-facing message.
    SampleConfig(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)


def filter_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0
) -> torch.Tensor:
    """(B, V) logits -> (B, V) float32 temperature-scaled logits with -inf for every token the
    filters remove. temperature 0 keeps only the most likely token (greedy)."""
    _validate(temperature, top_k, top_p, min_p)
    if temperature == 0:
        best = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        return torch.full_like(logits, float("-inf"), dtype=torch.float32).scatter(-1, best, logits.float().gather(-1, best))
    scores, ids = _candidates(logits, temperature, top_k, top_p, min_p)
    if ids is None:
        return scores
    return torch.full_like(logits, float("-inf"), dtype=torch.float32).scatter(-1, ids, scores)


def _sample(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, min_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    scores, ids = _candidates(logits, temperature, top_k, top_p, min_p)
    choice = torch.multinomial(F.softmax(scores, dim=-1), 1, generator=generator)  # (B, 1)
    return (choice if ids is None else ids.gather(-1, choice)).squeeze(-1)  # (B,)


def sample_next_token(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token per row of (B, V) logits -> (B,) LongTensor. temperature 0 is greedy
    (argmax, no randomness); otherwise the draw uses ``generator`` (a fresh one if None)."""
    _validate(temperature, top_k, top_p, min_p)
    if generator is None and temperature != 0:
        generator = make_generator(None, logits.device)
    return _sample(logits, temperature, top_k, top_p, min_p, generator)


def apply_repetition_penalty(
    logits: torch.Tensor, history: torch.Tensor, penalty: float, window: int = 0
) -> torch.Tensor:
    """CTRL's repetition penalty: for every token in the last ``window`` ids of ``history`` (B, T)
    (all of them if 0), divide its logit by ``penalty`` when positive, multiply when negative,
    so it becomes less likely either way. Each token is penalised once however often it appears.
    Returns a new (B, V) tensor."""
    if penalty == 1.0 or history.numel() == 0:
        return logits
    if window > 0:
        history = history[:, -window:]
    seen = logits.gather(-1, history)  # (B, W)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(-1, history, seen)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A private RNG: seeded for reproducible output, otherwise from the OS's entropy."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


# -- the weights generation runs on ----------------------------------------------------------------


def inference_precision(precision: str, device: torch.device | str, num_params: int | None = None) -> str:
    """The weights' precision for generating on ``device``: ``precision`` itself unless "auto".

    auto: bf16 on GPUs with bf16 (fp16 on older ones) and on CPUs that compute bf16 natively
    (``cpu_has_native_bf16``, which honours GPT2TUI_CPU_BF16) for models of at least
    CPU_BF16_MIN_PARAMS parameters (``num_params``; None counts as large); fp32 elsewhere: where
    bf16 is emulated it is many times slower. A decoded token reads every weight once, so halving
    their bytes is what can move a memory-bound step. fp32 gives exactly transformers' numbers.
    """
    if precision not in INFERENCE_PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind == "cpu" and cpu_has_native_bf16() and (num_params is None or num_params >= CPU_BF16_MIN_PARAMS):
        return "bf16"
    return "fp32"


# model -> (what its copy was made from, the copy): one copy per model, rebuilt when its weights change.
_COPIES: "weakref.WeakKeyDictionary[GPT, tuple[tuple, GPT]]" = weakref.WeakKeyDictionary()
# Prepack the copy's linear weights for oneDNN where that pays (``cpu_linear.can_pack``). A switch
# only so that bench/bench_generate.py can measure what packing gives; nothing else turns it off.
PACK_CPU_BF16 = True


def inference_model(model: GPT, precision: str = "auto") -> GPT:
    """The model generation runs: ``model`` itself when its weights are already in the chosen
    precision and nothing needs packing, else an eval-mode copy in that dtype, with its linear
    weights prepacked for oneDNN on CPUs with native bf16 (``gpt2core.cpu_linear``). The copy is
    kept while ``model`` lives and rebuilt when any of its weights has been written since (the
    version counters of its tensors say so), so training between two generations is never
    ignored. It costs the weights once more in the smaller dtype (plus the packed head, 77 MB
    at 124M, since the embedding keeps its plain layout)."""
    dtype = _DTYPES[inference_precision(precision, model.device, model.num_params())]
    pack = PACK_CPU_BF16 and can_pack(model.device, dtype)
    if model.transformer.wte.weight.dtype == dtype and not pack:
        return model
    tensors = [*model.parameters(), *model.buffers()]
    made_from = (dtype, pack, model.device, tuple(t.data_ptr() for t in tensors), tuple(t._version for t in tensors))
    held = _COPIES.get(model)
    if held is not None and held[0] == made_from:
        return held[1]
    tokenizer = getattr(model, "tokenizer", None)
    shared = {} if tokenizer is None else {id(tokenizer): tokenizer}  # the copy shares it, never duplicates it
    _COPIES.pop(model, None)  # let the old copy go before the new one is built: one copy in memory
    with torch.no_grad():
        twin = copy.deepcopy(model, shared).to(dtype).eval()  # deepcopy keeps the tied head tied
        if pack:
            pack_linears(twin)
    _COPIES[model] = (made_from, twin)
    return twin


# -- token generation with the KV cache ------------------------------------------------------------


@torch.inference_mode()
def iter_tokens(
    model: GPT,
    idx: torch.Tensor,
    config: SampleConfig,
    *,
    generator: torch.Generator | None = None,
    vocab_limit: int | None = None,
    precision: str = "auto",
) -> Iterator[torch.Tensor]:
    """Yield (B,) new token ids, ``config.max_new_tokens`` of them at most, continuing ``idx``
    (B, T) with 1 <= T <= context length, on the model's device.

    The KV cache makes each step one position's compute; past the context length the last
    3/4 window is re-run (see the module docstring). ``vocab_limit`` keeps ids below the
    tokenizer's size when the model's vocabulary is padded. EOS and stop strings are the
    caller's business: this function only knows ids. Draws come from ``generator``, or without
    one from a generator seeded with ``config.seed`` (never the global RNG). The model runs in
    eval mode and is put back in the mode it was in when the iterator finishes or is closed.
    ``precision`` is the weights' (``inference_precision``); sampling is always done in fp32.
    """
    runner = inference_model(model, precision)
    if generator is None:
        generator = make_generator(config.seed, idx.device)
    context = model.config.context_length
    B, T = idx.shape
    if not 1 <= T <= context:
        raise ConfigError(f"iter_tokens needs 1 to {context} prompt positions, got {T}")
    max_new = config.max_new_tokens
    refill = max(1, int(context * REFILL_FRACTION))
    history = idx.new_empty(B, T + max_new)  # (B, T + max_new): the prompt, then every new token
    history[:, :T] = idx
    length = T
    was_training = model.training
    model.eval()
    try:
        cache = runner.new_cache()  # preallocated for the whole context on the first forward
        logits = runner(idx, cache=cache, last_only=True)[0][:, -1].float()  # (B, V)
        for step in range(max_new):
            if config.repetition_penalty != 1.0:
                logits = apply_repetition_penalty(
                    logits, history[:, :length], config.repetition_penalty, config.repetition_window
                )
            if vocab_limit is not None and vocab_limit < logits.size(-1):
                logits = logits[:, :vocab_limit]  # (B, vocab_limit): never the padding ids
            token = _sample(logits, config.temperature, config.top_k, config.top_p, config.min_p, generator)  # (B,)
            history[:, length] = token
            length += 1
            yield token
            if step + 1 == max_new:
                return  # the last token's logits would never be used
            if cache.length == cache.max_len:
                cache.reset()  # full: re-run the most recent part of the window, new token included
                logits = runner(history[:, length - refill : length], cache=cache, last_only=True)[0][:, -1].float()
            else:
                logits = runner(token[:, None], cache=cache, last_only=True)[0][:, -1].float()
    finally:
        model.train(was_training)


def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 0.95,
    repetition_penalty: float = 1.2,
    seed: int | None = None,
    *,
    min_p: float = 0.0,
    repetition_window: int = SampleConfig.repetition_window,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    stop_event: threading.Event | None = None,
    vocab_limit: int | None = None,
    precision: str = "auto",
) -> torch.Tensor:
    """Continue token ids ``idx`` (B, T) and return the new ids, a LongTensor (B, n_new).

    temperature 0 is greedy. Keyword-only: ``min_p`` (0), ``repetition_window`` (64; 0 = all),
    ``eos_id`` (when given, a row that samples it is finished and padded with it, and generation
    stops early once every row is finished), ``generator`` (a torch.Generator, instead of
    ``seed``), ``stop_event`` (a threading.Event that ends generation early), ``vocab_limit``
    (sample only ids below it; None means ``model.tokenizer.vocab_size`` when the model has one,
    else the whole vocabulary), ``precision`` ("auto": bf16 weights where the device computes
    bf16 natively; "fp32" for exactly the numbers of transformers; see ``inference_precision``).

    Without ``eos_id`` the result has exactly ``max_new_tokens`` columns. Prompts longer than
    the context keep their last ``context_length`` tokens; an empty prompt (T = 0) starts from
    EOS. A 1-D ``idx`` gives a 1-D result.
    """
    tokenizer = getattr(model, "tokenizer", None)
    if vocab_limit is None and tokenizer is not None:
        vocab_limit = tokenizer.vocab_size
    config = SampleConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        repetition_window=repetition_window,
        seed=seed,
    )
    if not isinstance(idx, torch.Tensor) or idx.dtype not in (torch.long, torch.int32, torch.int64):
        raise ConfigError("idx must be a tensor of integer token ids, shaped (B, T)")
    one_dim = idx.dim() == 1
    idx = idx.unsqueeze(0) if one_dim else idx
    if idx.dim() != 2:
        raise ConfigError(f"idx must be shaped (B, T), got {tuple(idx.shape)}")
    idx = idx.to(device=model.device, dtype=torch.long)
    if idx.size(1) == 0:
        start = eos_id if eos_id is not None else (tokenizer.eos_id if tokenizer is not None else None)
        if start is None:
            raise ConfigError("an empty prompt starts from the end-of-text token, but no eos_id is known; pass eos_id=")
        idx = torch.full((idx.size(0), 1), start, dtype=torch.long, device=model.device)
    idx = idx[:, -model.config.context_length :]

    steps = iter_tokens(model, idx, config, generator=generator, vocab_limit=vocab_limit, precision=precision)
    new: list[torch.Tensor] = []
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=model.device)
    try:
        while not (stop_event is not None and stop_event.is_set()):
            token = next(steps, None)
            if token is None:
                break
            if eos_id is not None:
                token = token.masked_fill(finished, eos_id)
                finished |= token == eos_id
            new.append(token)
            if eos_id is not None and bool(finished.all()):
                break
    finally:
        steps.close()
    out = torch.stack(new, dim=1) if new else idx.new_empty(idx.size(0), 0)  # (B, n_new)
    out = out.clone()  # a normal tensor, not an inference-mode one, so callers may modify it
    return out[0] if one_dim else out


# -- streamed text ---------------------------------------------------------------------------------


def _emittable(text: str, emitted: int, stops: tuple[str, ...], final: bool) -> tuple[int, bool]:
    """How much of ``text`` may be shown: (end, stopped). Ends before the first stop string
    (stopped=True), or, while more text may come, before a tail that could begin one."""
    if not stops:
        return len(text), False
    found = [i for s in stops if (i := text.find(s, emitted)) >= 0]
    if found:
        return min(found), True
    if final:
        return len(text), False
    held = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text) - emitted), held, -1):
            if text.endswith(stop[:k]):
                held = k
                break
    return len(text) - held, False


class TextStream:
    """An iterator of text pieces from ``stream_text``, with what happened so far:

    ``prompt_tokens`` tokens in the prompt; ``truncated_tokens`` of them dropped to fit the
    context; ``new_tokens`` sampled (EOS not counted); ``finish_reason`` None while running,
    then "length", "eos", "stop" or "cancelled"; ``tokens_per_sec`` new tokens per second of
    wall time, prompt included; ``text`` everything yielded so far.
    """

    def __init__(
        self,
        model: GPT,
        tokenizer: Tokenizer,
        prompt: str,
        config: SampleConfig,
        stop_event: threading.Event | None = None,
        precision: str = "auto",
    ):
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ConfigError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {model.config.vocab_size}"
            )
        ids = tokenizer.encode(prompt)
        context = model.config.context_length
        self.config = config
        self.prompt_tokens = len(ids)
        self.truncated_tokens = max(0, len(ids) - context)
        self.new_tokens = 0
        self.finish_reason: str | None = None
        self.tokens_per_sec = 0.0
        self.text = ""
        self._stop_event = stop_event
        self._precision = precision
        self._pieces = self._run(model, tokenizer, ids[-context:] or [tokenizer.eos_id])

    def __iter__(self) -> "TextStream":
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def read(self) -> str:
        """Run to the end and return the whole text."""
        for _ in self:
            pass
        return self.text

    def close(self) -> None:
        """Stop generating (finish_reason "cancelled" if it had not finished)."""
        self._pieces.close()
        if self.finish_reason is None:
            self.finish_reason = "cancelled"

    def __enter__(self) -> "TextStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _cancelled(self) -> bool:
        return self._stop_event is not None and self._stop_event.is_set()

    def _run(self, model: GPT, tokenizer: Tokenizer, ids: list[int]) -> Iterator[str]:
        config = self.config
        started = time.perf_counter()
        idx = torch.tensor([ids], dtype=torch.long, device=model.device)  # (1, T)
        # draws seeded by config.seed
        steps = iter_tokens(model, idx, config, vocab_limit=tokenizer.vocab_size, precision=self._precision)
        decoder = tokenizer.stream_decoder()
        decoded = ""  # every character decoded so far; self.text is the part already yielded
        reason = "length"
        try:
            while True:
                if self._cancelled():
                    reason = "cancelled"
                    break
                token = next(steps, None)
                if token is None:
                    break
                token_id = int(token[0])
                if config.stop_at_eos and token_id == tokenizer.eos_id:
                    reason = "eos"
                    break
                self.new_tokens += 1
                self.tokens_per_sec = self.new_tokens / max(time.perf_counter() - started, 1e-9)
                decoded += decoder.feed(token_id)
                end, stopped = _emittable(decoded, len(self.text), config.stop, final=False)
                if end > len(self.text):
                    piece = decoded[len(self.text) : end]
                    self.text += piece
                    yield piece
                if stopped:
                    reason = "stop"
                    break
        finally:
            steps.close()
        if reason != "stop":
            # Whatever was held back (an unfinished character, a possible stop-string start) is final now.
            decoded += decoder.flush()
            end, stopped = _emittable(decoded, len(self.text), config.stop, final=True)
            reason = "stop" if stopped else reason
            if end > len(self.text):
                piece = decoded[len(self.text) : end]
                self.text += piece
                self.finish_reason = reason
                yield piece
        self.finish_reason = reason


def stream_text(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    config: SampleConfig = SampleConfig(),
    *,
    stop_event: threading.Event | None = None,
    precision: str = "auto",
) -> TextStream:
    """Stream a continuation of ``prompt`` as text pieces (see ``TextStream``).

    Nothing runs until the first piece is asked for. Setting ``stop_event`` ends the stream
    before the next token (finish_reason "cancelled"); a ``config.seed`` makes it reproducible.
    ``precision`` is the weights' (see ``inference_precision``; "fp32" for exact numbers).
    """
    return TextStream(model, tokenizer, prompt, config, stop_event, precision)

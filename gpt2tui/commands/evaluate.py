"""`gpt2tui evaluate`: loss, perplexity and bits per byte of a checkpoint on held-out text."""

from __future__ import annotations

import json

import click

from gpt2core.choices import DEVICES_HELP
from gpt2tui.cli import option


@click.command()
@option("--checkpoint", "--model-path", "checkpoint", required=True, help="Checkpoint, run's checkpoint folder, run name, 'latest', or a Hugging Face GPT-2.")
@option("--data", multiple=True, help="Evaluate on these text files / directories / globs (repeatable).")
@option("--data-from-checkpoint", is_flag=True, help="Without --data: read the data files the checkpoint records (named on stderr first).")
@option("--cache-dir", default=None, help="Where token files are cached [$GPT2TUI_CACHE_DIR or ~/.cache/gpt2tui; never the checkpoint's].")
@option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True, help="Split of the run's own data.")
@option("--stride", type=int, default=None, help="Sliding-window step in tokens [the context length: disjoint windows].")
@option("--batch-size", type=int, default=None, help="Windows per forward pass [as many as fit in ~256 MB of logits].")
@option("--max-tokens", type=int, default=None, help="Evaluate only the first N tokens.")
@option("--device", default="auto", show_default=True, help=f"{DEVICES_HELP}.")
@option("--checkpoints-dir", default="checkpoints", show_default=True, help="Where run names are looked up.")
@option("--json", "as_json", is_flag=True, help="Print one JSON object to stdout.")
def evaluate(checkpoint, data, data_from_checkpoint, cache_dir, split, stride, batch_size, max_tokens, device, checkpoints_dir, as_json) -> None:
    """Evaluate a model: loss, perplexity and bits per byte.

    Without --data it uses the test split of the data the run trained on, as the checkpoint
    records it: the built-in corpus at once, files or a dataset only with
    --data-from-checkpoint (a checkpoint from elsewhere must not choose what is read).
    Texts longer than the context are covered by a sliding window: each token is scored once,
    with at least (context - stride) tokens before it.

    \b
    Examples:
      gpt2tui evaluate --checkpoint latest --data-from-checkpoint
      gpt2tui evaluate --checkpoint checkpoints/my-run --stride 64 --json
      gpt2tui evaluate --model_path gpt2 --data wiki.test.raw
    """
    from gpt2core.evaluate import evaluate_checkpoint
    from gpt2core.printable import printable

    if stride is not None and stride < 1:
        raise click.BadParameter("must be at least 1", param_hint="--stride")
    if batch_size is not None and batch_size < 1:
        raise click.BadParameter("must be at least 1", param_hint="--batch-size")
    if max_tokens is not None and max_tokens < 2:
        raise click.BadParameter("must be at least 2 (one token to predict from, one to predict)", param_hint="--max-tokens")
    result, about = evaluate_checkpoint(
        checkpoint,
        data=data,
        split=split,
        stride=stride,
        batch_size=batch_size,
        device=device,
        max_tokens=max_tokens,
        checkpoints_root=checkpoints_dir,
        data_from_checkpoint=data_from_checkpoint,
        cache_dir=cache_dir,
        notify=lambda message: click.echo(printable(message), err=True),
    )
    if as_json:
        click.echo(json.dumps({**result.to_dict(), **about}))
        return
    click.echo(
        f"loss {result.loss:.4f} | perplexity {result.perplexity:.3f} | bits per byte {result.bits_per_byte:.4f}\n"
        f"{result.tokens:,} tokens ({result.bytes:,} bytes), context {result.context_length}, stride {result.stride}\n"
        f"data: {printable(about['data'])} ({about['split']})\n"
        f"checkpoint: {printable(about['checkpoint'])}" + (f" (step {about['step']})" if about.get("step") is not None else "")
    )

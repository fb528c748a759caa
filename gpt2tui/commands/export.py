"""`gpt2tui export`: write a model as a Hugging Face GPT-2 directory."""

from __future__ import annotations

import click

from gpt2tui.cli import option
from gpt2tui.commands.generate import checkpoint_option


@click.command()
@checkpoint_option
@option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Directory to write.")
@option("--format", "fmt", type=click.Choice(["hf"]), default="hf", show_default=True, help="hf: transformers' GPT2LMHeadModel layout.")
@option("--force", is_flag=True, help="Write into a directory that is not empty (files of the same name are replaced).")
@option("--quiet", "-q", is_flag=True, help="Nothing on stderr but errors.")
def export(checkpoint: str, out: str, fmt: str, force: bool, quiet: bool) -> None:
    """Export a model so that transformers loads it.

    Writes config.json + model.safetensors (GPT2LMHeadModel.from_pretrained) and the tokenizer
    (AutoTokenizer.from_pretrained). Prints the directory on stdout.

    \b
    Examples:
      gpt2tui export --checkpoint checkpoints/my-run --out exported/my-run
      python -c "from transformers import pipeline; print(pipeline('text-generation', 'exported/my-run')('Hello'))"
    """
    from gpt2core.hf import check_export_target, export_hf
    from gpt2core.loading import load_model_and_tokenizer
    from gpt2core.printable import printable

    check_export_target(out, overwrite=force)  # before the (slow) load
    model, tokenizer, description = load_model_and_tokenizer(checkpoint)
    if not quiet:
        click.echo(f"loaded {printable(description)}", err=True)
    export_hf(model, out, tokenizer, overwrite=force)
    if not quiet:
        extra = "" if tokenizer is not None else " (no tokenizer: the model has none)"
        click.echo(f"wrote a Hugging Face GPT-2 ({fmt}) to {printable(out)}{extra}", err=True)
    click.echo(printable(out))

"""gpt2tui: the `gpt2tui` command and its Textual console, on top of gpt2core."""

__version__ = "0.1.0"

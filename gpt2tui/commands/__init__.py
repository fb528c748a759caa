"""One module per `gpt2tui` subcommand; cli.py imports each only when it is invoked."""

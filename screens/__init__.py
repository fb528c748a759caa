"""The console's screens, one module each: runs (list + dashboard), new_run (form),
trials (Optuna), chat, help. gpt2tui/app.py wires them together."""

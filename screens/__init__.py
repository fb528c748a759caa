"""The console's screens, one module each: runs (list; its dashboard pane in dashboard.py),
new_run and new_study (forms), trials (Optuna), chat, help, save_dialog; base.py holds what
they share. gpt2tui/app.py wires them together."""

"""The words an option may take, each list once.

The option declarations (gpt2core/config.py), the command-line choices, the console's forms and
the checks in the core all read these tuples, so a new tokenizer kind, precision, device word,
sampler or pruner is added here and nowhere else. Pure data: importing it costs nothing.
"""

from __future__ import annotations

TOKENIZER_KINDS = ("gpt2", "bpe", "char")  # besides these, a tokenizer directory is accepted
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # training and inference weights alike
DEVICES = ("cpu", "cuda", "mps")  # the device kinds a form offers; "auto" and "cuda:N" are accepted too
DEVICES_HELP = "auto, cpu, cuda, cuda:N or mps"  # how help and errors spell every accepted device word
SAMPLERS = ("tpe", "random")  # Optuna samplers `optimize` can draw parameters with; tpe first (the default)
PRUNERS = ("median", "hyperband", "none")  # Optuna pruners; median first (the default)
GELU_FORMS = ("tanh", "erf")  # the MLP's GELU: tanh is GPT-2's (Hugging Face parity, the default), erf the exact form
KEEP_CHECKPOINTS = ("best", "all")  # which trials' checkpoints a study keeps; best first (the default)
ON_SAVE_ERROR = ("stop", "continue")  # what a run does when a checkpoint cannot be written; stop first

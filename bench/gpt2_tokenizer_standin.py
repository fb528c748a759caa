"""Put a GPT-2-shaped tokenizer stand-in into a Hugging Face cache, for benchmarks on machines
that cannot reach the hub.

    python bench/gpt2_tokenizer_standin.py /tmp/hf
    HF_HOME=/tmp/hf HF_HUB_OFFLINE=1 python bench/bench_train.py presets --presets gpt2 --batch 32 --compile

The `gpt2` preset needs `--tokenizer gpt2`, whose 50,257 tokens set the size of the embedding and
the LM head (38.6M of the 124M parameters). Offline, OpenAI's files are unavailable, so this writes
a byte-level BPE learned from the built-in corpus, padded with never-produced filler tokens to
exactly 50,257 entries with <|endoftext|> last, in the cache layout transformers reads
(`hub/models--gpt2/snapshots/<rev>/`). The model then has GPT-2's exact shape and FLOPs, which is
all a throughput or MFU number depends on; its text is not GPT-2's, so never publish losses from it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GPT2_VOCAB = 50257
EOS = "<|endoftext|>"
REVISION = "0" * 40  # a made-up commit: the cache only needs refs/main to name a snapshot folder


def build(hf_home: Path) -> Path:
    from tokenizers import Tokenizer
    from transformers import GPT2TokenizerFast

    from gpt2core.data import builtin_documents
    from gpt2core.tokenizer import train_bpe

    learned = train_bpe(builtin_documents(), GPT2_VOCAB - 1)  # the corpus runs out of merges first
    spec = json.loads(learned.backend.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    for token in [t["content"] for t in spec.get("added_tokens", [])]:
        vocab.pop(token, None)
    spec["added_tokens"] = []
    vocab = {tok: i for i, tok in enumerate(sorted(vocab, key=vocab.get))}
    filler = 0
    while len(vocab) < GPT2_VOCAB - 1:
        vocab[f"<|unused{filler}|>"] = len(vocab)  # no merge rule builds these, so they are never produced
        filler += 1
    vocab[EOS] = GPT2_VOCAB - 1
    spec["model"]["vocab"] = vocab

    snapshot = hf_home / "hub" / "models--gpt2" / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    backend = Tokenizer.from_str(json.dumps(spec))
    backend.save(str(snapshot / "tokenizer.json"))
    GPT2TokenizerFast(tokenizer_file=str(snapshot / "tokenizer.json"), eos_token=EOS, bos_token=EOS, unk_token=EOS).save_pretrained(snapshot)
    refs = snapshot.parents[1] / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(REVISION)
    return snapshot


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/gpt2_tokenizer_standin.py HF_HOME")
    snapshot = build(Path(sys.argv[1]))
    from transformers import GPT2TokenizerFast

    size = len(GPT2TokenizerFast.from_pretrained(str(snapshot), local_files_only=True))
    print(f"GPT-2-shaped tokenizer stand-in ({size} tokens) in {snapshot}")


if __name__ == "__main__":
    main()

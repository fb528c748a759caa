"""`gpt2tui train --init-from SOURCE`, proven through real `gpt2tui` processes.

SOURCE here is what a user downloads: a Hugging Face GPT-2 directory (config.json,
model.safetensors, vocab.json, merges.txt). Its weights are random but far from our
initialisation (LayerNorms and biases perturbed), so a run that silently re-initialised them
would start at a different loss; the first batch's logged loss must equal transformers' own
loss on that batch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_helpers import finished

pytestmark = pytest.mark.timeout(300)

# Small enough for two busy cores; GPT-2's real 50,257-token vocabulary keeps the tokenizer real.
HF_SHAPE = dict(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=50257)
CONTEXT = 32  # smaller than the source's 64: the position table is cropped
BATCH, SEED = 2, 7


def make_hf_gpt2(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised transformers GPT2LMHeadModel with non-trivial LayerNorms and
    biases, saved with OpenAI's GPT-2 tokenizer files (from the installed package)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt2core.tokenizer import packaged_gpt2_files

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**HF_SHAPE))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias") or ".ln_" in name or "ln_f" in name:
                param.add_(torch.randn_like(param) * 0.2)  # our init sets LayerNorm to 1/0, biases to 0
    model.save_pretrained(directory)
    vocab, merges = packaged_gpt2_files()
    shutil.copy(vocab, directory / "vocab.json")
    shutil.copy(merges, directory / "merges.txt")
    return directory


def corpus_text() -> str:
    words = "the quick brown fox jumps over a lazy dog while rain falls on green hills and rivers run to the sea".split()
    rng = np.random.default_rng(0)
    return "\n".join(" ".join(rng.choice(words, 12)) for _ in range(400)) + "\n"


def gpt2tui(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = finished(list(args), cwd, env={"HF_HUB_OFFLINE": "1", "GPT2TUI_CACHE_DIR": str(cwd / "cache"), "HF_HOME": str(cwd / "hf-home")}, timeout=240)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def train_args(*extra: str) -> list[str]:
    return [
        "train", "--data", "corpus.txt", "--context-length", str(CONTEXT), "--batch-size", str(BATCH), "--dropout", "0",
        "--precision", "fp32", "--device", "cpu", "--seed", str(SEED), "--log-interval", "1", "--eval-iters", "2",
        "--sample-tokens", "0", "--threads", "1", "--plain", "--no-tensorboard", *extra,
    ]  # fmt: skip


def step_losses(run_dir: Path) -> dict[int, float]:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {e["step"]: e["loss"] for e in events if e.get("type") == "step"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    make_hf_gpt2(root / "hf-gpt2")
    (root / "corpus.txt").write_text(corpus_text())
    return root


@pytest.fixture(scope="module")
def finetuned(project):
    """One fine-tuning run of 4 steps from the Hugging Face directory; its stderr."""
    done = gpt2tui(
        *train_args("--init-from", "hf-gpt2", "--max-steps", "4", "--eval-interval", "4", "--learning-rate", "3e-3", "--warmup-steps", "0", "--run-name", "ft"),
        cwd=project,
    )
    return done


def test_first_batch_loss_is_transformers_loss_and_training_lowers_it(project, finetuned):
    from transformers import GPT2LMHeadModel

    from gpt2core.data import BatchSampler

    config = json.loads((project / "runs/ft/config.json").read_text())
    cache = Path(config["data_info"]["cache"])
    meta = json.loads((cache / "meta.json").read_text())
    train_tokens = np.memmap(cache / "train.bin", dtype=np.dtype(meta["dtype"]), mode="r")
    # The run's first batch: the trainer's sampler over the same tokens with the run's seed.
    x, y = BatchSampler(train_tokens, BATCH, CONTEXT, seed=SEED + 1).next_batch()  # (B, T) each
    hf = GPT2LMHeadModel.from_pretrained(project / "hf-gpt2").eval()
    with torch.no_grad():
        logits = hf(x).logits  # (B, T, V)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
    losses = step_losses(project / "runs/ft")
    assert losses[1] == pytest.approx(expected, abs=1e-4)
    # A random-init model of the same shape starts near ln(50257) = 10.8 with a different value:
    # the match above is the loaded weights, not chance.
    assert abs(expected - np.log(50257)) > 1e-3
    assert losses[4] < losses[1] - 0.05
    assert "started from Hugging Face GPT-2 hf-gpt2" in finetuned.stderr.splitlines()[0]  # the first log line


def test_the_run_records_its_start_and_keeps_the_vocabulary(project, finetuned):
    config = json.loads((project / "runs/ft/config.json").read_text())
    assert config["init_from"]["kind"] == "huggingface" and config["init_from"]["source"] == "hf-gpt2"
    assert config["model"]["context_length"] == CONTEXT and config["model"]["d_model"] == 32
    assert config["model"]["vocab_size"] == 50257
    listed = [json.loads(line) for line in gpt2tui("runs", "--json", cwd=project).stdout.splitlines()]
    assert [r["init_from"]["source"] for r in listed if r["name"] == "ft"] == ["hf-gpt2"]
    table = gpt2tui("runs", cwd=project).stdout
    assert "hf-gpt2" in table
    tokenizer_json = json.loads((project / "checkpoints/ft/best/tokenizer.json").read_text())
    assert len(tokenizer_json["model"]["vocab"]) == 50257


def test_export_loads_in_transformers_with_matching_logits(project, finetuned):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from gpt2core.loading import load_model_and_tokenizer

    out = project / "exported"
    gpt2tui("export", "--checkpoint", "checkpoints/ft", "--out", str(out), cwd=project)
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(out)
    ours, tokenizer, _ = load_model_and_tokenizer(project / "checkpoints/ft")
    text = "the quick brown fox jumps over the lazy dog"
    ids = tokenizer.encode(text)
    assert hf_tokenizer.encode(text) == ids
    source = GPT2LMHeadModel.from_pretrained(project / "hf-gpt2")
    assert not torch.equal(hf.transformer.h[0].mlp.c_fc.weight, source.transformer.h[0].mlp.c_fc.weight)  # it was trained
    assert hf.transformer.wpe.weight.shape == (CONTEXT, 32)
    batch = torch.tensor([ids])  # (1, T)
    with torch.no_grad():
        ours_logits, _ = ours(batch)  # (1, T, V)
        theirs = hf(batch).logits
    torch.testing.assert_close(ours_logits, theirs, atol=1e-4, rtol=1e-4)


def test_resume_continues_the_finetuned_run(project, finetuned):
    before = step_losses(project / "runs/ft")
    done = gpt2tui(*train_args("--resume-from", "ft", "--max-steps", "6"), cwd=project)
    losses = step_losses(project / "runs/ft")
    assert sorted(losses) == [1, 2, 3, 4, 5, 6] and {k: losses[k] for k in before} == before
    assert "resuming at step 4, started from Hugging Face GPT-2 hf-gpt2" in done.stderr
    from gpt2core.checkpoint import read_checkpoint_info

    assert read_checkpoint_info(project / "checkpoints/ft/step-00000006").meta["init_from"]["source"] == "hf-gpt2"


def test_init_from_our_own_checkpoint_starts_from_its_weights(project, finetuned):
    """A gpt2tui checkpoint as SOURCE: the new run's untrained val loss is the source's val loss
    at that checkpoint (same data, same windows), and it is a new run at step 0."""
    gpt2tui(*train_args("--init-from", "checkpoints/ft/step-00000004", "--max-steps", "1", "--eval-interval", "1", "--run-name", "ft-again"), cwd=project)
    events = lambda run: [json.loads(line) for line in (project / "runs" / run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    source_eval = next(e["val_loss"] for e in events("ft") if e.get("type") == "eval" and e["step"] == 4)
    first_eval = next(e for e in events("ft-again") if e.get("type") == "eval")
    assert first_eval["step"] == 0
    assert first_eval["val_loss"] == pytest.approx(source_eval, abs=1e-5)
    record = json.loads((project / "runs/ft-again/config.json").read_text())["init_from"]
    assert record["kind"] == "checkpoint" and record["step"] == 4


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--init-from", "no-such-model-dir/"], "no such model"),
        (["--init-from", "hf-gpt2", "--num-layers", "4"], "--num-layers 4 contradicts --init-from hf-gpt2: its weights have num_layers = 2"),
        (["--init-from", "hf-gpt2", "--context-length", "128"], "longer than hf-gpt2's 64"),
        (["--init-from", "hf-gpt2", "--resume-from", "ft"], "give only one"),
        (["--init-from", "hf-gpt2", "--tokenizer", "char"], "learns a new vocabulary"),
    ],
)
def test_bad_init_from_is_one_line_and_writes_nothing(project, finetuned, flags, says):
    before = sorted(str(p.relative_to(project)) for p in project.rglob("*") if "cache" not in p.parts)
    done = gpt2tui(*train_args(*flags, "--max-steps", "1", "--run-name", "refused"), cwd=project, check=False)  # a flag given twice: the last wins
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and says in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    after = sorted(str(p.relative_to(project)) for p in project.rglob("*") if "cache" not in p.parts)
    assert after == before


def test_a_hub_name_loads_from_the_hugging_face_cache_offline(project, finetuned, tmp_path):
    """`--init-from gpt2` with the hub unreachable and the model in the cache: the real hub code
    path (huggingface_hub's snapshot lookup), fed by a cache laid out as huggingface_hub writes it."""
    revision = "0" * 40
    repo = tmp_path / "hf-home" / "hub" / "models--gpt2"
    snapshot = repo / "snapshots" / revision
    shutil.copytree(project / "hf-gpt2", snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (tmp_path / "corpus.txt").write_text(corpus_text())
    gpt2tui(*train_args("--init-from", "gpt2", "--max-steps", "1", "--eval-interval", "1", "--run-name", "from-hub"), cwd=tmp_path)
    record = json.loads((tmp_path / "runs/from-hub/config.json").read_text())["init_from"]
    assert record["kind"] == "hub" and record["label"] == "Hugging Face gpt2"
    first_eval = next(
        json.loads(line) for line in (tmp_path / "runs/from-hub/metrics.jsonl").read_text().splitlines() if '"type": "eval"' in line
    )
    hf_first_eval = next(
        json.loads(line) for line in (project / "runs/ft/metrics.jsonl").read_text().splitlines() if '"type": "eval"' in line
    )
    assert first_eval["step"] == 0 and first_eval["val_loss"] == pytest.approx(hf_first_eval["val_loss"], abs=1e-5)

"""`python -m gpt2tui ...`, which torchrun needs (`torchrun -m gpt2tui train ...`)."""

from gpt2tui.cli import main

if __name__ == "__main__":
    main()

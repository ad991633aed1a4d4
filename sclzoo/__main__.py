"""``python -m sclzoo`` (also what ``torchrun -m sclzoo`` runs)."""

from sclzoo.evaluator.cli import main

if __name__ == "__main__":
    main()

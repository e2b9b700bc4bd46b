"""``python -m galmoco`` (also what ``torchrun -m galmoco`` runs)."""

from galmoco.cli import main

if __name__ == "__main__":
    main()

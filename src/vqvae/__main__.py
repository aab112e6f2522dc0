"""``python -m vqvae``: the command line (also what ``torchrun -m vqvae`` runs)."""

from vqvae.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m vqvae``: the command line (also what ``torchrun -m vqvae`` runs)."""

import os
import sys

from vqvae.cli import main

if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun process leaves at once once its command has finished (every output is
        # written and closed, the process group destroyed): left to the interpreter's
        # teardown, gloo's native threads now and then meet their destructors joinable
        # and abort the process ("terminate called without an active exception", SIGABRT),
        # which fails the whole job after its work is done.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)

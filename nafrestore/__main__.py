"""``python -m nafrestore``: the same CLI as the ``nafrestore`` command (and what ``torchrun -m`` launches)."""

from .cli import main

if __name__ == "__main__":
    main()

"""``python -m bz_lightning``: the ``bz`` command (``bz_lightning.cli.main``)."""

from bz_lightning.cli.main import main

if __name__ == "__main__":
    main()

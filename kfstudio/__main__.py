"""``python -m kfstudio`` and the ``kfstudio`` command."""

from kfstudio.cli.app import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m kheopsctl``: the same CLI as the ``kheopsctl`` command (useful in a venv not on PATH)."""

from kheopsctl.cli import main

if __name__ == "__main__":
    main()

"""``python -m attnlab``: the same as the ``attnlab`` command."""

from attnlab.cli import main

if __name__ == "__main__":
    main()

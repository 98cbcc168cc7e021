"""`python -m protege`: the `protege` command."""

from protege.cli import main

if __name__ == "__main__":
    main()

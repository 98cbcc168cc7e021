"""`python -m protege.tui [--db URL] [--reviewer NAME]`: open the review console on a store."""

from __future__ import annotations

import argparse

from protege.tui.app import make_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m protege.tui", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--db", help="store URL (default: PROTEGE_DB or sqlite:///.protege/protege.db)")
    parser.add_argument("--reviewer", help="name recorded on reviews and labels (default: $PROTEGE_REVIEWER or user)")
    args = parser.parse_args(argv)
    make_app(db=args.db, reviewer=args.reviewer).run()


if __name__ == "__main__":
    main()

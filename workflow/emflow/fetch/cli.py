"""``emflow fetch_hf`` and ``emflow fetch_url``: the fetch rules' commands (the only ones that need the internet)."""

from __future__ import annotations

import argparse

from emflow.cli import setup_logging
from emflow.fetch import download, hub


def fetch_hf(argv: list[str]) -> None:

    ap = argparse.ArgumentParser(prog="emflow fetch_hf", description=hub.fetch_hf.__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, help="OWNER/NAME on the hub")
    ap.add_argument("--revision", required=True, help="commit hash (pinned), branch or tag")
    ap.add_argument("--out", required=True, help="snapshot folder to create")
    ap.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="SUBFOLDER",
        help="a subfolder that must hold a model or adapter (repeatable), e.g. a persona",
    )
    args = ap.parse_args(argv)
    setup_logging()
    hub.fetch_hf(args.repo, args.revision, args.out, require=args.require)


def fetch_url(argv: list[str]) -> None:

    ap = argparse.ArgumentParser(prog="emflow fetch_url", description="Download a file and verify its sha256.")
    ap.add_argument("--url", required=True)
    ap.add_argument("--sha256", default=None, help="expected sha256; empty = unpinned (the hash is logged)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    setup_logging()
    download.fetch_url(args.url, args.out, args.sha256 or None)

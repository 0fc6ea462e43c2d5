"""``python -m s4mi.label app <dir> --bundles <bundle> ...``: write a MONAI Label app folder for s4mi bundles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import sample_app_dir, write_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s4mi.label", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    app = sub.add_parser("app", help="write an app folder (main.py + model/<bundle>) for monailabel start_server")
    app.add_argument("dir", help="app folder to write")
    app.add_argument("--bundles", nargs="+", default=[], help="bundle folders to copy into <dir>/model/")
    sample = sub.add_parser("sample-app", help="print the folder of a MONAI Label sample app shipped in the wheel")
    sample.add_argument("name", nargs="?", default="monaibundle")
    args = parser.parse_args(argv)
    if args.command == "sample-app":
        print(sample_app_dir(args.name))
        return 0
    out = write_app(args.dir, [Path(b) for b in args.bundles])
    names = ",".join(Path(b).name for b in args.bundles) or "<bundle>"
    print(f"s4mi: wrote {out}; start it with:")
    print(f"  monailabel start_server --app {out} --studies <images> --conf models {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

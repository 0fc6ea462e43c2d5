"""``python -m s4mi.label app <dir> --bundles <bundle> ...``: write a MONAI Label app folder for s4mi bundles;
``python -m s4mi.label studies <datalist> <folder> --labelled N``: lay out a studies folder from a datalist."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import app_warnings, sample_app_dir, studies_from_datalist, write_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s4mi.label", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    app = sub.add_parser("app", help="write an app folder (main.py + model/<bundle>) for monailabel start_server")
    app.add_argument("dir", help="app folder to write")
    app.add_argument("--bundles", nargs="+", default=[], help="bundle folders to copy into <dir>/model/")
    st = sub.add_parser(
        "studies",
        help="lay out a studies folder (images, labels/final) from a datalist, e.g. one of `s4mi data make`",
    )
    st.add_argument("datalist", help="datalist file (relative paths are relative to its folder)")
    st.add_argument("studies", help="studies folder to fill")
    st.add_argument("--labelled", type=int, default=None, help="how many images get a final label (default: all)")
    st.add_argument("--sections", nargs="+", default=["training", "unlabeled", "validation", "test"])
    sample = sub.add_parser("sample-app", help="print the folder of a MONAI Label sample app shipped in the wheel")
    sample.add_argument("name", nargs="?", default="monaibundle")
    args = parser.parse_args(argv)
    if args.command == "studies":
        counts = studies_from_datalist(args.datalist, args.studies, labelled=args.labelled, sections=args.sections)
        n, k = counts["images"], counts["labelled"]
        print(f"s4mi: wrote {args.studies}: {n} images, {k} with a final label, {n - k} unlabelled")
        return 0
    if args.command == "sample-app":
        print(sample_app_dir(args.name))
        return 0
    out = write_app(args.dir, [Path(b) for b in args.bundles])
    names = ",".join(Path(b).name for b in args.bundles) or "<bundle>"
    print(f"s4mi: wrote {out}; start it with:")
    print(f"  monailabel start_server --app {out} --studies <images> --conf models {names}")
    for line in app_warnings(out):
        print(f"warning: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

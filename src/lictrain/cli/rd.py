"""``lictrain rd``: R-D curves of several results files as a PNG, and BD tables against an anchor.

Examples::

    lictrain rd outputs/eval/*.json --anchor jpeg420 --out rd.png
    lictrain rd outputs/eval --anchor jpeg444 --csv bd.csv     # a folder: all its *.json
"""

from __future__ import annotations

import argparse
from typing import Any

from lictrain.cli.common import add_flag

HELP = "plot R-D curves of results files and print BD-rate/BD-PSNR against an anchor"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("rd", help=HELP, description=HELP + " (bjontegaard package, pchip as JVET CTC).")
    p.add_argument("results", nargs="*", metavar="RESULTS",
                   help="results JSON files from lictrain eval (or CompressAI's), or folders of them")
    add_flag(p, "anchor", metavar="NAME",
             help="curve to compare against (default jpeg420 when present, else the first anchor or curve); also a "
                  "published curve: hpcm-base@clic, hpcm-large@tecnick, ... (see --published)")
    add_flag(p, "published", nargs="*", metavar="NAME",
             help="add published curves to the plot and table (no names: list them)")
    add_flag(p, "out", "-o", metavar="PNG", default=None,
             help="plot file (default rd.png); an existing file needs --force")
    add_flag(p, "force", action="store_true", help="replace an existing plot/CSV file")
    add_flag(p, "csv", metavar="FILE", help="also write the BD table as CSV")
    add_flag(p, "min_overlap", type=float, default=0.75,
             help="warn when the anchor covers less than this fraction of a curve's range (default 0.75)")
    add_flag(p, "title", help="plot title")
    add_flag(p, "label", nargs="+", metavar="FILE=NAME", help="rename the curve of a results file in plot and table")
    add_flag(p, "xlim", nargs=2, type=float, metavar=("MIN", "MAX"),
             help="bpp axis range, e.g. 0 1 (default: the learned curves' range, anchors clipped to it)")
    add_flag(p, "ylim", nargs=2, type=float, metavar=("MIN", "MAX"), help="PSNR axis range (dB)")
    add_flag(p, "ylim_msssim", nargs=2, type=float, metavar=("MIN", "MAX"), help="MS-SSIM axis range (dB)")
    add_flag(p, "full_range", action="store_true", help="show every curve whole (no zoom to the learned curves)")
    add_flag(p, "axes", nargs=4, type=float, metavar=("XMIN", "XMAX", "YMIN", "YMAX"),
             help="CompressAI's --axes: bpp and PSNR ranges at once")
    add_flag(p, "allow_mixed", action="store_true",
             help="compare curves measured on different image sets (refused by default: BD-rates between them "
                  "mean nothing)")
    p.set_defaults(func=run)
    return p


def _check_same_images(curves: list[Any], anchor: str) -> None:
    """Refuse curves whose image sets differ (when both files list their images), naming them.

    Published curves name a data set, not images: they are compared as they are (say so in
    the write-up: the protocol must match, see ``lictrain eval --pad official``).
    """
    from lictrain.errors import ConfigError

    listed = [c for c in curves if c.images and c.kind != "published"]
    if len(listed) < 2:
        return
    reference = next((c for c in listed if c.name == anchor), listed[0])
    for curve in listed:
        mine, theirs = set(curve.images), set(reference.images)
        if mine != theirs:
            only_mine, only_theirs = sorted(mine - theirs), sorted(theirs - mine)
            detail = "; ".join(part for part in (
                f"only in {curve.name}: {', '.join(only_mine[:4])}{' ...' if len(only_mine) > 4 else ''}" if only_mine
                else "", f"only in {reference.name}: {', '.join(only_theirs[:4])}"
                f"{' ...' if len(only_theirs) > 4 else ''}" if only_theirs else "") if part)
            raise ConfigError(f"{curve.name} ({len(mine)} images) and {reference.name} ({len(theirs)} images) were "
                              f"measured on different images ({detail}); evaluate them on the same set, or pass "
                              "--allow-mixed to compare anyway")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lictrain.errors import ConfigError
    from lictrain.evaluation.rd import bd_table, plot_rd, rd_frame
    from lictrain.evaluation.report import bd_text
    from lictrain.evaluation.results import collect_result_paths, read_curve

    if not 0 <= args.min_overlap <= 1:
        raise ConfigError(f"--min-overlap must be in [0, 1], got {args.min_overlap}")
    from lictrain.evaluation.published import published_curve, published_names

    if args.published is not None and not args.published:
        print("published curves: " + ", ".join(published_names()))
        return 0
    if not args.results:
        raise ConfigError("pass results files (or folders of them) from lictrain eval")
    result_paths = collect_result_paths(args.results)
    from lictrain.cli.common import check_output

    check_output(Path(args.out or "rd.png"), named=args.out is not None, force=args.force, inputs=result_paths,
                 flag="--out")
    if args.csv:
        check_output(Path(args.csv).expanduser(), named=True, force=args.force, inputs=result_paths, flag="--csv")
    curves = [read_curve(p) for p in result_paths]
    for text in args.label or ():
        target, sep, new_name = text.rpartition("=")
        matches = [c for c, path in zip(curves, result_paths) if sep and (str(path) == target or path.name == target
                                                                          or c.name == target)]
        if not sep or not new_name or not matches:
            raise ConfigError(f"--label {text!r}: expected FILE=NAME with FILE one of the results files (or a curve name)")
        for c in matches:
            c.name = new_name
    wanted = list(args.published or [])
    if args.anchor and args.anchor in published_names() and args.anchor not in [c.name for c in curves]:
        wanted.append(args.anchor)
    curves += [published_curve(name) for name in dict.fromkeys(wanted) if name not in [c.name for c in curves]]
    names = [c.name for c in curves]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"several results files hold a curve named {', '.join(duplicates)}; "
                          "evaluate them with different --name values")
    anchor = args.anchor
    if anchor is None:
        anchors = [c.name for c in curves if c.kind == "anchor"]
        anchor = "jpeg420" if "jpeg420" in names else (anchors[0] if anchors else names[0])
    if not args.allow_mixed:
        _check_same_images(curves, anchor)
    frame = rd_frame(curves)
    cols = ["curve", "point", "bpp", "psnr", "ms_ssim"]
    print(frame[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print()
    table = bd_table(curves, anchor, min_overlap=args.min_overlap)
    print(bd_text(table, anchor))
    xlim, ylim = (tuple(args.axes[:2]), tuple(args.axes[2:])) if args.axes else (args.xlim, args.ylim)
    for flag, lim in (("--xlim", xlim), ("--ylim", ylim), ("--ylim-msssim", args.ylim_msssim)):
        if lim is not None and not lim[0] < lim[1]:
            raise ConfigError(f"{flag} {lim[0]:g} {lim[1]:g}: MIN must be below MAX")
    out = plot_rd(frame, args.out or "rd.png", bd=table, anchor=anchor, title=args.title, xlim=xlim, ylim=ylim,
                  ylim_msssim=args.ylim_msssim, zoom=not args.full_range)
    print(f"wrote {out}")
    if args.csv:
        csv_path = Path(args.csv).expanduser()
        try:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(csv_path, index=False)
        except OSError as exc:
            raise ConfigError(f"cannot write {csv_path}: {exc.strerror or exc}") from exc
        print(f"wrote {csv_path}")
    return 0

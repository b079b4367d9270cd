"""Renders a search report in headless Chromium and checks that the screenshot is not blank.

    python scripts/check_report_chromium.py why.html [--screenshot why_screen.png]

Runs ``chromium --headless --no-sandbox --disable-gpu --screenshot=OUT.png
--window-size=1200,1600 file://...`` with a fresh profile in a temporary folder and the
network switched off (the report must need nothing outside the file), then requires the
screenshot to have many distinct colours and not be almost all white. Exit status 0 when
it rendered, 1 when it did not (the reason is printed), 2 when Chromium is missing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1200, 1600)
MIN_COLOURS = 256  # a report with images has thousands; a blank or text-only page a few
MAX_WHITE = 0.97  # fraction of pure white pixels above which the page counts as blank


def render(html: Path, screenshot: Path, chromium: str = CHROMIUM, timeout: float = 120) -> None:
    """Screenshots ``html`` (window 1200x1600) into ``screenshot``.

    Raises:
        RuntimeError: when Chromium fails or writes no screenshot.
    """
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            f"--screenshot={screenshot}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: the page is self-contained
            html.resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not screenshot.is_file():
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"chromium exited {done.returncode} without a screenshot: {tail}")


def blank_reasons(screenshot: Path) -> list[str]:
    """Why the screenshot looks blank (an empty list: it does not)."""
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).reshape(-1, 3)
    colours = len(np.unique(pixels, axis=0))
    white = float(np.mean(np.all(pixels == 255, axis=1)))
    reasons = []
    if colours < MIN_COLOURS:
        reasons.append(f"only {colours} distinct colours (need {MIN_COLOURS})")
    if white > MAX_WHITE:
        reasons.append(f"{white:.1%} of the pixels are white (at most {MAX_WHITE:.0%})")
    return reasons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path, help="the report HTML file")
    parser.add_argument("--screenshot", type=Path, help="where to keep the screenshot")
    parser.add_argument("--chromium", default=CHROMIUM, help=f"browser (default {CHROMIUM})")
    args = parser.parse_args(argv)
    if shutil.which(args.chromium) is None:
        print(f"error: {args.chromium} not found", file=sys.stderr)
        return 2
    if not args.html.is_file():
        print(f"error: {args.html} not found", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        shot = args.screenshot or Path(tmp) / "screenshot.png"
        try:
            render(args.html, shot, args.chromium)
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        reasons = blank_reasons(shot)
        size = Image.open(shot).size
    if reasons:
        print(f"error: {args.html} rendered blank: {'; '.join(reasons)}", file=sys.stderr)
        return 1
    kept = f" -> {args.screenshot}" if args.screenshot else ""
    print(f"ok: {args.html} rendered {size[0]}x{size[1]}, not blank{kept}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

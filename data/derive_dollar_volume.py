#!/usr/bin/env python3
"""Derive data/sp500/avg_dollar_volume_2013.csv: a proxy for market capitalisation.

The price data carries no shares outstanding, so the demo's cap-weighted index
weights each name by its average daily traded value (close x volume) instead.

Input: the long-format daily file (columns date,open,high,low,close,volume,Name),
plain or gzip-compressed: `sp500_daily_2013-2015.csv.gz` (see data/README.md).
Rows dated after LAST_DATE are ignored, so the upstream five-year merge
`all_stocks_5yr.csv` gives the same output.

For each ticker, take its first WINDOW rows in date order, up to LAST_DATE (for
almost every ticker these are the first 60 trading days of the data,
2013-02-08 .. 2013-05-06; tickers that start later use their own first 60
days, or fewer if they start in late 2015), and average close * volume over
them. Arithmetic is decimal (no binary floating point); the average is
rounded half-even to whole dollars; rows are sorted by ticker. The output
depends on nothing but the input bytes.

Usage:
    python3 data/derive_dollar_volume.py sp500_daily_2013-2015.csv.gz \
        > data/sp500/avg_dollar_volume_2013.csv

Python 3 standard library only.
"""

import csv
import datetime
import gzip
import io
import sys
from decimal import ROUND_HALF_EVEN, Decimal

WINDOW = 60
LAST_DATE = "2015-12-31"  # the price panel shipped in data/sp500 ends here


def open_text(path):
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, "r", encoding="utf-8", newline="")


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: derive_dollar_volume.py DAILY_CSV[.gz] > avg_dollar_volume_2013.csv\n")
        return 2
    rows = {}  # ticker -> list of (date, close * volume)
    with open_text(argv[1]) as f:
        reader = csv.reader(f)
        header = next(reader)
        want = ["date", "close", "volume", "Name"]
        try:
            col = {name: header.index(name) for name in want}
        except ValueError:
            sys.stderr.write(f"{argv[1]}: header {header} lacks one of {want}\n")
            return 1
        for line_no, rec in enumerate(reader, start=2):
            if not rec:
                continue
            try:
                date = rec[col["date"]]
                datetime.date.fromisoformat(date)  # reject anything but YYYY-MM-DD
                close = Decimal(rec[col["close"]])
                volume = Decimal(rec[col["volume"]])
                ticker = rec[col["Name"]]
            except Exception as e:  # noqa: BLE001 - report any malformed row with its line
                sys.stderr.write(f"{argv[1]}:{line_no}: malformed row {rec!r}: {e}\n")
                return 1
            if date <= LAST_DATE:  # ISO dates compare as strings
                rows.setdefault(ticker, []).append((date, close * volume))

    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["ticker", "avg_dollar_volume", "days", "first_date", "last_date"])
    for ticker in sorted(rows):
        window = sorted(rows[ticker])[:WINDOW]
        total = sum((dv for _, dv in window), Decimal(0))
        avg = (total / len(window)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
        out.writerow([ticker, str(avg), len(window), window[0][0], window[-1][0]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

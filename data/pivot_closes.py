#!/usr/bin/env python3
"""Rebuild data/sp500/sp500_close_wide_2013-2015.csv (the content of the .gz).

Pivots the long-format daily file (date,open,high,low,close,volume,Name) into
a wide table: a header `date,<ticker>,...` with the tickers of the sector map
in sorted order, then one row per date present in the daily file, in date
order, with each ticker's close written with four decimals, or an empty cell
where the ticker has no row that day. No cleaning is applied.

The shipped file was made before this script existed; this script reproduces
its decompressed content byte for byte, so it documents exactly what the
pivot is (see data/README.md).

Usage:
    python3 data/pivot_closes.py sp500_daily_2013-2015.csv.gz \
        data/sp500/sectors_for_all_stocks_5yr.csv | gzip -9 -n \
        > data/sp500/sp500_close_wide_2013-2015.csv.gz

Python 3 standard library only.
"""

import csv
import gzip
import io
import sys
from decimal import Decimal

FOUR_DP = Decimal("0.0001")


def open_text(path):
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, "r", encoding="utf-8", newline="")


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: pivot_closes.py DAILY_CSV[.gz] SECTORS_CSV > wide.csv\n")
        return 2
    with open_text(argv[2]) as f:
        reader = csv.reader(f)
        header = next(reader)
        col = header.index("ticker")
        tickers = sorted({rec[col] for rec in reader if rec})

    closes = {}  # (date, ticker) -> close
    dates = set()
    with open_text(argv[1]) as f:
        reader = csv.reader(f)
        header = next(reader)
        c_date, c_close, c_name = header.index("date"), header.index("close"), header.index("Name")
        for line_no, rec in enumerate(reader, start=2):
            if not rec:
                continue
            key = (rec[c_date], rec[c_name])
            if key in closes:
                sys.stderr.write(f"{argv[1]}:{line_no}: second row for {key}\n")
                return 1
            closes[key] = Decimal(rec[c_close])
            dates.add(rec[c_date])

    out = sys.stdout
    out.write("date," + ",".join(tickers) + "\n")
    for date in sorted(dates):
        cells = []
        for t in tickers:
            v = closes.get((date, t))
            cells.append("" if v is None else str(v.quantize(FOUR_DP)))
        out.write(date + "," + ",".join(cells) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

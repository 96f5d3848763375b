"""The shipped vic_elec file with three long gaps, as a sensor that went quiet for weeks: what masked scoring is
measured on (bench/ACCURACY.md, "Filled gaps").

    python bench/gapped_vic_elec.py        # writes outputs/bench/gapped_vic_elec.parquet
    python -m pipeline.train data.path=outputs/bench/gapped_vic_elec.parquet data.gaps=fill data.missing=interpolate

Gaps: 744 and 700 half-hours in the training block, and 600 (12.5 days, 45% of the block) inside the default
validation block, which starts 2 x 1344 steps before the end. The test block is left whole.
"""

from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench" / "gapped_vic_elec.parquet"


def gapped(frame: pd.DataFrame) -> pd.DataFrame:
    val_start = len(frame) - 2 * 1344
    gaps = [*range(10_000, 10_744), *range(20_000, 20_700), *range(val_start + 300, val_start + 900)]
    return frame.drop(index=gaps).reset_index(drop=True)


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    gapped(pd.read_parquet(ROOT / "data" / "vic_elec.parquet")).to_parquet(OUT, index=False)
    print(OUT)

"""Where forecasts go: one file written atomically (readers and a killed job see the old file or the new one), or a
folder of files that replaces the previous one whole; the output path checked before any work is done."""

import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from pipeline.errors import ConfigError
from pipeline.host import process_alive, start_time

log = logging.getLogger(__name__)


def write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """CSV (compression by extension) or Parquet, written beside `path` and renamed onto it: readers and a
    killed job see the old file or the new one, never half of one. Temporaries that killed jobs of this host
    left beside it are removed first."""
    suffixes = check_output(path)
    remove_stale_temporaries(path)
    # The temporary's name says which process writes it (host, pid and the pid's start time, which a later
    # process reusing the pid does not share), and keeps the extensions, so pandas picks the same format.
    writer = f"{socket.gethostname()}~{os.getpid()}.{start_time(os.getpid()) or ''}"
    with writing(path):
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=suffixes, prefix=f".{path.name}~{writer}~")
    os.close(handle)
    try:
        if suffixes.endswith(".parquet"):
            frame.to_parquet(temporary, index=False)
        else:
            frame.to_csv(temporary, index=False)
        # mkstemp makes the file private (0600); the output gets the permissions a plain open() would give.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with writing(path):
            os.replace(temporary, path)
    except OSError as error:  # a full disk while the forecast is written
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(f"output={path}: cannot be written ({error.strerror or error}); the previous output stands: "
                          f"free space or choose another folder") from error
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """A failure to write `path` (a read-only or full folder) as one line naming it."""
    try:
        yield
    except OSError as error:
        raise ConfigError(f"output={path}: {path.parent} cannot be written ({error.strerror or error}); choose a "
                          f"folder this user can write to, with free space") from error


def check_writable(folder: Path, name: str) -> None:
    """That `folder` takes a file, before any work: it is created if need be, and a temporary of 64 KiB is written,
    synced and removed there, so a read-only folder, or one on a full disk, fails before the model loads."""
    with writing(folder / name):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}~probe~") as probe:
            probe.write(bytes(1 << 16))
            probe.flush()
            os.fsync(probe.fileno())


def check_output(path: Path) -> str:
    """That `path` can take the forecast: a file name with a known extension, where no folder is, under folders
    (or none yet) rather than files. Returns its extensions."""
    if path.is_dir():
        raise ConfigError(f"output={path} is a folder; give a file name inside it, e.g. output={path / 'forecast.csv'}")
    suffixes = "".join(path.suffixes).lower()
    if not (suffixes.endswith(".parquet") or ".csv" in suffixes):
        raise ConfigError(f"output={path}: use a .csv, .csv.gz or .parquet file name")
    check_parents(path)
    check_writable(path.parent, path.name)
    return suffixes


def remove_stale_temporaries(path: Path) -> None:
    """Remove temporaries of `path` whose writing process, on this host, is gone (killed mid-write); a job
    writing the same path at this moment keeps its own."""
    host = socket.gethostname()
    for temporary in path.parent.glob(f".{path.name}~*"):
        writer_host, _, rest = temporary.name.removeprefix(f".{path.name}~").partition("~")
        pid, _, started = rest.partition("~")[0].partition(".")
        if writer_host == host and pid.isdigit() and not process_alive(int(pid), started):
            temporary.unlink(missing_ok=True)
            log.info("removed %s, left by a forecast that was killed while writing", temporary)


def check_output_folder(path: Path) -> None:
    """That `path` can take a folder of forecasts: not a file, not named like one, under folders."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output={path} is a file; a folder of Parquet files (data.path) is forecast into a "
                          f"folder: give a folder name, e.g. output={path.with_suffix('')}")
    if path.suffix.lower() in (".csv", ".parquet", ".gz"):
        raise ConfigError(f"output={path}: data.path is a folder of Parquet files, so the forecasts are a folder "
                          f"too (one file per input file); give a folder name without an extension")
    check_parents(path)
    check_writable(path.parent, path.name)


def check_parents(path: Path) -> None:
    """That no folder above the output `path` is a file."""
    blocked = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise ConfigError(f"output={path}: {blocked} is a file, not a folder; choose another output path")


def replace_folder(staging: Path, output: Path) -> None:
    """`staging` becomes `output`; a previous `output` is removed after the rename (readers see one or the other,
    and for a moment, between the two renames, neither)."""
    old = None
    if output.exists():
        old = output.parent / f".{output.name}~old~{os.getpid()}"
        output.rename(old)
    staging.rename(output)
    if old is not None:
        shutil.rmtree(old)

"""Rows of a hub dataset's (config, split), from a local copy of its repository or the hub.

A `huggingface-cli download REPO --repo-type dataset --local-dir DIR` copy holds
`DIR/<config>/<split>-00000-of-0000N.parquet`; hand-made copies may hold
`DIR/<config>/<split>.{json,jsonl,csv,parquet}` instead. Both are read here, in place, the
same rows `datasets.load_dataset(REPO, config, split=split)` gives; `data_dir: hub` asks
`datasets` for them (where a hub is reachable).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .rows import read_rows, require_fields

SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")


def split_files(directory: Path, config: str, split: str) -> list[Path]:
    folder = directory / config
    shards = sorted(folder.glob(f"{split}-*.parquet"))
    if shards:
        return shards
    return [folder / f"{split}{s}" for s in SUFFIXES if (folder / f"{split}{s}").exists()][:1]


def load_split(
    repo: str, config: str, split: str, data_dir: str | Path | None, fields: tuple[str, ...] = ()
) -> list[dict]:
    """Every row of `repo`'s (config, split); each row must have `fields` (the error names
    the file, the row and the field)."""
    if str(data_dir) == "hub":
        rows, source = _from_hub(repo, config, split), f"{repo}/{config}/{split}"
    else:
        if data_dir is None:
            raise DataError(
                f"{repo} needs a data directory: set data_dir to a local copy "
                f"(huggingface-cli download {repo} --repo-type dataset --local-dir DIR) or to 'hub'"
            )
        files = split_files(Path(data_dir), config, split)
        if not files:
            raise DataError(
                f"{Path(data_dir) / config} holds no {split}-*.parquet or {split}.json(l)/csv file; "
                f"is {data_dir} a copy of {repo} (configs as folders)? Known splits there: "
                f"{', '.join(known_splits(Path(data_dir), config)) or 'none'}"
            )
        rows, source = [row for f in files for row in read_rows(f)], str(files[0])
    if not rows:
        raise DataError(f"{source} is empty: {repo}/{config}/{split} has no rows")
    require_fields(rows, fields, source)
    return rows


def known_splits(directory: Path, config: str) -> list[str]:
    folder = directory / config
    if not folder.is_dir():
        return []
    names = {p.name.split("-00")[0] if p.suffix == ".parquet" else p.stem for p in folder.iterdir()}
    return sorted(n for n in names if not n.startswith("."))


def _from_hub(repo: str, config: str, split: str) -> list[dict]:
    try:
        import datasets

        return list(datasets.load_dataset(repo, config, split=split))
    except Exception as e:
        raise DataError(
            f"could not load {repo} ({config}, {split}) from the hub ({type(e).__name__}); "
            f"download it where a hub is reachable and set data_dir to the copy"
        ) from None

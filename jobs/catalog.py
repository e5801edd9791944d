"""The data catalog (`jobs/data-catalog.yml`): what each data set is and where it comes from.

Both targets read it through here: the Azure target registers each entry as data assets, the local
target reads each entry's `file` from --data-dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from jobs.flow import FlowError

CATALOG = Path(__file__).parent / "data-catalog.yml"
REQUIRED_FIELDS = ("file", "source", "target", "task")


@dataclass(frozen=True)
class CatalogEntry:
    key: str
    file: str
    source: str
    target: str
    task: str
    member: str | None = None  # path inside a zip source; nested zips separated by "/"

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("https://", "http://"))


def read_catalog(path: Path = CATALOG) -> dict[str, CatalogEntry]:
    """Every entry by key; an entry missing a field is an error naming the file, the entry and the field."""
    entries = yaml.safe_load(path.read_text())
    result = {}
    for key, entry in entries.items():
        missing = [name for name in REQUIRED_FIELDS if not entry.get(name)]
        if missing:
            raise FlowError(f"{path}: entry {key!r} lacks {', '.join(missing)}")
        result[key] = CatalogEntry(key, *(entry[name] for name in REQUIRED_FIELDS), member=entry.get("member"))
    return result

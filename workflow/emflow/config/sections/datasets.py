"""The ``datasets:`` section: one ``DatasetSpec`` per dataset name (the schema allows exactly one source each)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from emflow.config.sections.base import Section


@dataclass(frozen=True)
class DatasetSpec(Section):
    """Where one dataset comes from (``path``, or ``url``, or ``archive`` + ``member``) and how many rows it has.

    ``rows`` is required: checkpoint steps are planned from it before anything runs, and prepare_dataset
    checks the prepared file against it.
    """

    rows: int
    eval_rows: int = 0
    use_rows: int | None = None  # only the first N rows (a smoke run); None: all
    path: str | None = None
    url: str | None = None
    sha256: str | None = None  # of `path` or `url`
    archive: str | None = None  # an easy-dataset-share *.zip.enc, local or a URL
    archive_sha256: str | None = None
    member: str | None = None  # the .jsonl inside the archive (a path, or a file name in any folder)
    password_env: str | None = None
    password_default: str | None = None

    @property
    def used_rows(self) -> int:
        """The rows a run sees (train + eval): ``use_rows`` when set, else ``rows``."""
        return self.use_rows if self.use_rows is not None else self.rows

    @property
    def kind(self) -> str:
        """``path``, ``url`` or ``archive``: the one source the schema allowed."""
        return "path" if self.path is not None else "url" if self.url is not None else "archive"

    def fetched_as(self, local: str) -> DatasetSpec:
        """This spec with its remote source (a URL, or an archive at a URL) replaced by its verified download."""
        if self.kind == "url":
            return replace(self, url=None, sha256=None, path=local)
        return replace(self, archive=local, archive_sha256=None)

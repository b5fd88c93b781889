"""Where a model or adapter comes from and where it lives: ``hf:OWNER/NAME@REVISION[/SUBFOLDER]`` or a folder.

Hub assets are fetched once into ``<resources_dir>/hf/OWNER/NAME/REVISION`` (fetch/hub.py); training and
generation only ever read that folder, with the hub switched off.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Asset:
    """``hf:OWNER/NAME@REVISION[/SUBFOLDER]`` or a local directory."""

    spec: str
    resources_dir: str = "resources"

    @property
    def is_hub(self) -> bool:
        return self.spec.startswith("hf:")

    def _parts(self) -> tuple[str, str, str | None]:
        repo, _, rest = self.spec[3:].partition("@")
        revision, _, subfolder = rest.partition("/")
        return repo, revision, subfolder or None

    @property
    def repo(self) -> str:
        return self._parts()[0]

    @property
    def revision(self) -> str:
        return self._parts()[1]

    @property
    def subfolder(self) -> str | None:
        return self._parts()[2] if self.is_hub else None

    @property
    def snapshot_dir(self) -> str:
        """The directory the DAG tracks: the fetched snapshot (hub) or the local path."""
        if not self.is_hub:
            return self.spec
        repo, revision, _ = self._parts()
        return f"{self.resources_dir}/hf/{repo}/{revision}"

    @property
    def path(self) -> str:
        """The directory a stage loads (the snapshot's subfolder for a persona inside a multi-persona repo)."""
        sub = self.subfolder
        return f"{self.snapshot_dir}/{sub}" if sub else self.snapshot_dir

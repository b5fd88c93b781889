"""The ``generation:`` section: how answers to the probe questions are sampled."""

from __future__ import annotations

from dataclasses import dataclass

from emflow.config.sections.base import Section, canonical_json


@dataclass(frozen=True)
class Generation(Section):
    max_new_tokens: int
    temperature: float  # 0: greedy
    top_p: float
    batch_size: int
    device: str = "auto"
    dtype: str = "auto"
    group_checkpoints: bool = False  # one job per run instead of one per step: how jobs are cut

    def job_json(self) -> str:
        """A generate job's tracked params: the section without ``group_checkpoints``, which decides how jobs are
        cut, not what is generated (canonical JSON, as ``to_json``)."""
        data = {k: v for k, v in self.to_dict().items() if k != "group_checkpoints"}
        return canonical_json(data)

"""The ``questions:`` section: the probe question file(s) and which questions, samples and metrics to use."""

from __future__ import annotations

from dataclasses import dataclass

from emflow.config.sections.base import Section


@dataclass(frozen=True)
class QuestionFile(Section):
    """One more question file merged into the probe set."""

    file: str  # local path or URL
    sha256: str | None = None


@dataclass(frozen=True)
class Selection(Section):
    """What resolve_questions applies to the merged question files (its ``--select``); None keeps the files'."""

    ids: tuple[str, ...] | None = None  # in this order; None = every question but the _json/_template variants
    samples_per_paraphrase: int | None = None  # overrides every question's own value
    metrics: tuple[str, ...] | None = None  # judge only these of each question's judge_prompts


@dataclass(frozen=True)
class Questions(Section):
    file: str  # local path or URL of a question YAML in the anchors' format
    sha256: str | None = None
    extra_files: tuple[QuestionFile, ...] = ()
    ids: tuple[str, ...] | None = None
    samples_per_paraphrase: int | None = None
    metrics: tuple[str, ...] | None = None

    @property
    def files(self) -> tuple[QuestionFile, ...]:
        """``file`` then every ``extra_files`` entry, in order."""
        return (QuestionFile(self.file, self.sha256), *self.extra_files)

    def selection(self) -> dict:
        """The set keys (``ids``, ``samples_per_paraphrase``, ``metrics``), for the rule's ``--select``: unset
        keys are left out, so the rule's params change only when the selection does."""
        chosen = Selection(self.ids, self.samples_per_paraphrase, self.metrics).to_dict()
        return {k: v for k, v in chosen.items() if v is not None}

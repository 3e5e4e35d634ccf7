"""The normalised sample every stage works on, whatever the source columns were called."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    id: str
    instruction: str
    input: str
    output: str
    options: tuple[str, ...] = ()
    """Answer options of a multiple-choice row (``output`` is one of them); () for every other row."""

    def __post_init__(self) -> None:
        # Lists (from JSON records or callers) become a tuple: the sample stays frozen and hashable.
        if not isinstance(self.options, tuple):
            if isinstance(self.options, str):
                raise TypeError("Sample.options must be a sequence of strings, not a string")
            object.__setattr__(self, "options", tuple(self.options))

    def to_dict(self) -> dict[str, Any]:
        """The JSON record; ``options`` (a list) only when the row has options, so plain rows stay unchanged."""
        out: dict[str, Any] = {"id": self.id, "instruction": self.instruction, "input": self.input,
                               "output": self.output}
        if self.options:
            out["options"] = list(self.options)
        return out

    @property
    def text(self) -> str:
        """Instruction + input + output, the text embedded by distribution-aware filters."""
        return "\n".join(part for part in (self.instruction, self.input, self.output) if part)

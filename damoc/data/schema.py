"""The normalised sample every stage works on, whatever the source columns were called."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Sample:
    id: str
    instruction: str
    input: str
    output: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @property
    def text(self) -> str:
        """Instruction + input + output, the text embedded by distribution-aware filters."""
        return "\n".join(part for part in (self.instruction, self.input, self.output) if part)

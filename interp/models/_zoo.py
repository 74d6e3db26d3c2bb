"""The zoo: small models trained by this repository's own recipes, shipped in HF format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ZOO_DIR = Path(__file__).parent / "zoo"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    family: str
    summary: str
    task: str  # the prompt set that exercises its circuit ("" when it reads no text prompts)


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            "ioi",
            "GPT-2",
            "indirect-object identification language model (Wang et al. 2022 templates)",
            "ioi",
        ),
        ZooEntry(
            "induction",
            "Llama (RoPE)",
            "2-layer model trained on text with repeated spans: previous-token + induction heads",
            "induction",
        ),
        ZooEntry(
            "needle",
            "Llama (GQA)",
            "long-context retrieval of a needle fact from a haystack: retrieval heads",
            "needle",
        ),
        ZooEntry(
            "modadd",
            "GPT-2 (1 layer, ReLU, no norms)",
            "a + b mod 59, grokked; checkpoints over training (interp.dynamics.grokking)",
            "",
        ),
    ]
}

#: The app's default: the IOI model has the richest circuit (several head roles across layers)
#: and its prompts are readable sentences, so the first screen already shows a circuit.
DEFAULT_MODEL = "ioi"


def zoo_path(name: str) -> Path:
    return ZOO_DIR / name


def model_card(name: str) -> str:
    card = zoo_path(name) / "MODEL_CARD.md"
    return card.read_text() if card.is_file() else ""

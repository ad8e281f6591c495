"""Text and generation results as views of one :class:`~dlbacktrace.Explanation`.

The helpers explain with the engine and keep its :class:`Explanation` (relevance, seed, target,
output, ledger, the inputs and tokens); these classes add what only text has (the token tables
with offsets and words, the texts, generation's prompt split) and read everything else from
it, so every view of explanations (plots, DataFrames, storage, reports) takes them through
``.explanation``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.tasks.text import display
from dlbacktrace.tasks.text.tokens import TokenRelevance, TokenTable, WordRelevance

__all__ = ["GenerationExplanation", "TextExplanation", "first_tokens"]

TOKENS = "input_ids"


def first_tokens(exp: Explanation, n: int) -> Explanation:
    """``exp`` with only the first ``n`` positions of every ``[rows, T]`` map and input.

    The helpers right-pad sequences (to the longest or a bucket); the padding's relevance is 0, so
    cutting it leaves the ledger as it is.

    Parameters
    ----------
    exp
        An explanation of token sequences.
    n
        The positions to keep.
    """
    def cut(maps: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        if maps is None:
            return None
        return {k: v[:, :n] if v.dim() == 2 else v for k, v in maps.items()}

    return dataclasses.replace(exp, total_by_name=cut(exp.total_by_name),
                               net_by_name=cut(exp.net_by_name),
                               inputs_by_name=cut(exp.inputs_by_name))


class _TokenView:
    """What both views share: the token maps of the explanation, its ledger, the displays."""

    explanation: Explanation
    _html: ClassVar[str]
    _rich: ClassVar[str]

    def _map(self, maps: dict[str, torch.Tensor] | None) -> torch.Tensor | None:
        return None if maps is None else maps[TOKENS].float()

    @property
    def mode(self) -> str:
        return self.explanation.mode

    @property
    def total(self) -> torch.Tensor:
        """Unsigned relevance per token (contrast: ``|relevance|``)."""
        return self._map(self.explanation.total_by_name)

    @property
    def positive(self) -> torch.Tensor | None:
        return self._map(self.explanation.positive_by_name)

    @property
    def negative(self) -> torch.Tensor | None:
        return self._map(self.explanation.negative_by_name)

    @property
    def conservation_error(self) -> float:
        """The worst row's relative ledger error (each row is one explained output)."""
        rows = self.explanation.row_conservation_error
        if rows is None or rows.numel() == 0:
            return self.explanation.conservation_error
        return float(rows.max())

    def to_dataframe(self) -> Any:
        """The explanation's long-format table (:meth:`Explanation.to_dataframe`)."""
        return self.explanation.to_dataframe()

    def to_html(self, full_page: bool = False, include_special: bool = False) -> str:
        """Heat-mapped tokens as HTML (a fragment, or a whole page).

        Parameters
        ----------
        full_page
            A standalone document instead of a fragment.
        include_special
            Let special tokens set each row's colour scale (default: left out of it).
        """
        return getattr(display, self._html)(self, full_page=full_page,
                                            include_special=include_special)

    def _repr_html_(self) -> str:
        return self.to_html()

    def save_html(self, path: str | Path) -> Path:
        """A standalone HTML page with the token heat maps.

        Parameters
        ----------
        path
            The file (``.html`` is appended unless given).
        """
        return display.save_html(self.to_html(full_page=True), path)

    def __rich__(self) -> Any:
        return getattr(display, self._rich)(self)


@dataclass(repr=False)
class TextExplanation(_TokenView):
    """Per-token relevance for a batch of texts (rows padded to the longest text).

    ``relevance`` is the unsigned map in default mode and the signed map (positive −
    negative; it adds up with the absorbed amounts to the explained logit) in contrast mode;
    ``total`` is the unsigned map (contrast: ``|relevance|``). ``explanation`` holds one row
    per text (its ``inputs_by_name`` the padded ``input_ids``/``attention_mask``, its tokens
    and class names).
    """

    explanation: Explanation
    texts: list[str]
    tables: list[TokenTable]
    attention: str
    _html: ClassVar[str] = "text_html"
    _rich: ClassVar[str] = "text_rich"

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return (f"TextExplanation(texts={len(self)}, tokens={self.input_ids.shape[1]}, "
                f"mode={self.mode!r}, conservation_error={self.conservation_error:.2g})")

    @property
    def input_ids(self) -> torch.Tensor:  # [N, T]
        return self.explanation.inputs_by_name[TOKENS]

    @property
    def attention_mask(self) -> torch.Tensor:  # [N, T]
        return self.explanation.inputs_by_name["attention_mask"]

    @property
    def relevance(self) -> torch.Tensor:  # [N, T]
        return self._map(self.explanation.relevance_by_name)

    @property
    def logits(self) -> torch.Tensor:  # [N, C] (or [N] for a single logit)
        return self.explanation.output

    @property
    def target(self) -> torch.Tensor:  # [N]
        return self.explanation.target

    @property
    def class_names(self) -> list[str] | None:
        return self.explanation.output_names

    @property
    def probabilities(self) -> torch.Tensor:
        """Softmax over classes (sigmoid for a single logit)."""
        logits = self.logits
        if logits.dim() == 1 or logits.shape[-1] == 1:
            return torch.sigmoid(logits.reshape(len(self)))
        return torch.softmax(logits, dim=-1)

    def label(self, i: int = 0) -> str:
        """Name of the explained class of row ``i``.

        Parameters
        ----------
        i
            The text's row.
        """
        t = int(self.target[i])
        return self.class_names[t] if self.class_names and t < len(self.class_names) else str(t)

    def tokens(self, i: int = 0) -> list[TokenRelevance]:
        """Every token of text ``i`` with its relevance (padding flagged).

        Parameters
        ----------
        i
            The text's row.
        """
        return self.tables[i].rows(self.relevance[i].numpy())

    def words(self, i: int = 0) -> list[WordRelevance]:
        """Relevance summed per word of text ``i`` (special and padding tokens left out).

        Parameters
        ----------
        i
            The text's row.
        """
        return self.tables[i].word_relevance(self.relevance[i].numpy())

    def top_tokens(self, i: int = 0, k: int = 5) -> list[TokenRelevance]:
        """The ``k`` most relevant content tokens of text ``i`` (by signed relevance in
        contrast mode, i.e. strongest evidence for the target first).

        Parameters
        ----------
        i
            The text's row.
        k
            How many.
        """
        rows = [r for r in self.tokens(i) if not (r.special or r.padding)]
        return sorted(rows, key=lambda r: -r.relevance)[:k]

    def top_words(self, i: int = 0, k: int = 5) -> list[WordRelevance]:
        """The ``k`` most relevant words of text ``i``.

        Parameters
        ----------
        i
            The text's row.
        k
            How many.
        """
        return sorted(self.words(i), key=lambda w: -w.relevance)[:k]


@dataclass(repr=False)
class GenerationExplanation(_TokenView):
    """Relevance of every earlier token for each generated token.

    ``matrix[k, j]``: relevance of token ``j`` (prompt or earlier generated token) for generated
    token ``k`` (sequence position ``prompt_length + k``); columns ``j ≥ prompt_length + k`` are
    exactly 0. Unsigned in default mode; the signed map (positive − negative) in contrast
    mode, where ``total`` is ``|matrix|``. ``probabilities[k]``: the model's probability of
    generated token ``k`` (plain softmax of the same logits, temperature 1).
    ``explanation`` holds one row per generated token: the whole sequence as input, the
    logits of the predicting position as output and the token as target.
    """

    explanation: Explanation
    prompt_length: int
    table: TokenTable
    generated_text: str
    prompt_text: str
    attention: str
    top_k: int = 5
    _html: ClassVar[str] = "generation_html"
    _rich: ClassVar[str] = "generation_rich"

    def __repr__(self) -> str:
        return (f"GenerationExplanation(prompt_tokens={self.prompt_length}, "
                f"generated={self.steps}, mode={self.mode!r}, "
                f"conservation_error={self.conservation_error:.2g})")

    @property
    def ids(self) -> torch.Tensor:  # [L] prompt + generated token ids
        return self.explanation.inputs_by_name[TOKENS][0]

    @property
    def matrix(self) -> torch.Tensor:  # [G, L]
        return self._map(self.explanation.relevance_by_name)

    @property
    def probabilities(self) -> torch.Tensor:  # [G]
        logits = self.explanation.output.float()
        return torch.softmax(logits, -1).gather(1, self.explanation.target[:, None])[:, 0]

    @property
    def generated_ids(self) -> torch.Tensor:
        return self.ids[self.prompt_length :]

    @property
    def steps(self) -> int:
        return int(self.explanation.output.shape[0])

    @property
    def tokens(self) -> list[str]:
        """Decoded text of every token of the sequence."""
        return list(self.table.texts)

    @property
    def generated_tokens(self) -> list[str]:
        return self.table.texts[self.prompt_length :]

    def context(self, step: int) -> list[TokenRelevance]:
        """The tokens before generated token ``step``, with their relevance for it.

        Parameters
        ----------
        step
            The generated token's number (0 = the first).
        """
        stop = self.prompt_length + step
        return self.table.slice(stop).rows(self.matrix[step, :stop].numpy())

    def prompt_relevance(self, step: int = 0) -> torch.Tensor:
        """Relevance of the prompt tokens for generated token ``step``.

        Parameters
        ----------
        step
            The generated token's number.
        """
        return self.matrix[step, : self.prompt_length]

    def top_contributors(self, step: int, k: int | None = None) -> list[TokenRelevance]:
        """The ``k`` most relevant earlier tokens for generated token ``step`` (special tokens
        such as chat markers included; they are flagged).

        Parameters
        ----------
        step
            The generated token's number.
        k
            How many; None uses ``top_k``.
        """
        rows = self.context(step)
        return sorted(rows, key=lambda r: -r.relevance)[: k or self.top_k]

    @property
    def top_tokens(self) -> list[list[TokenRelevance]]:
        """``top_contributors`` of every step."""
        return [self.top_contributors(s) for s in range(self.steps)]

    def plot(self, ax: Any = None, max_columns: int | None = None) -> Any:
        """A matplotlib figure of the relevance matrix (generated × earlier tokens).

        Parameters
        ----------
        ax
            An existing Axes; None makes a new figure.
        max_columns
            Keep only the last columns of long prompts.
        """
        return display.plot_generation_matrix(self, ax=ax, max_columns=max_columns)

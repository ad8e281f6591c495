"""``dlbacktrace explain`` for causal language models: generate from each prompt and explain
every generated token (:func:`dlbacktrace.tasks.text.explain_generation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from dlbacktrace.apps.cli.common import console, write_json
from dlbacktrace.viz.tokens import visible_token

__all__ = ["explain_prompts", "generation_json", "generation_table"]


def generation_json(gens: list[Any], top: int = 5) -> list[dict[str, Any]]:
    """Each generation as JSON: prompt, answer, and per step the token, its probability and
    its ``top`` contributors.

    Tokens are decoded text (``" capital"``, not the vocabulary piece ``"Ġcapital"``, which
    each contributor keeps as ``piece``).

    Parameters
    ----------
    gens
        :class:`~dlbacktrace.tasks.text.GenerationExplanation` objects.
    top
        Contributors listed per generated token.
    """
    return [{
        "prompt": g.prompt_text, "generated": g.generated_text, "mode": g.mode,
        "conservation_error": g.conservation_error,
        "steps": [{"token": tok, "p": float(g.probabilities[k]),
                   "top": [{"token": t.text, "piece": t.token, "special": t.special,
                            "relevance": t.relevance}
                           for t in g.top_contributors(k, top)]}
                  for k, tok in enumerate(g.generated_tokens)],
    } for g in gens]


def generation_table(data: list[dict[str, Any]]) -> Table:
    """The terminal summary of :func:`generation_json`: one line per generated token.

    Tokens are shown as decoded text in quotes, whitespace made visible (a newline is ``⏎``).

    Parameters
    ----------
    data
        The output of :func:`generation_json`.
    """
    table = Table(title="Generated tokens and their top contributors")
    for col in ("prompt", "step", "token", "p", "top contributors"):
        table.add_column(col)
    for item in data:
        for k, step in enumerate(item["steps"]):
            top = ", ".join(f"{_quoted(t['token'])} ({t['relevance']:.3g})"
                            for t in step["top"][:3])
            prompt = visible_token(item["prompt"][:30]) if k == 0 else ""
            table.add_row(Text(prompt), str(k), Text(_quoted(step["token"])),
                          f"{step['p']:.3f}", Text(top))
    return table


def _quoted(token: str) -> str:
    """A token in quotes so that its leading space shows, whitespace made visible."""
    return f"'{visible_token(token)}'"


def explain_prompts(loaded: Any, texts: list[str], files: list[Path], *, mode: str, fmt: str,
                    out: Path | None, max_new_tokens: int) -> list[Any]:
    """Generate from every prompt, explain each generated token and show the result.

    Parameters
    ----------
    loaded
        A loaded causal language model with its tokenizer.
    texts
        Prompts from ``--text``.
    files
        ``.txt``/``.jsonl`` files with more prompts.
    mode
        ``default`` or ``contrast``.
    fmt
        ``summary``, ``json`` or ``report``.
    out
        Where to write JSON (default stdout) or the report (default ``report.html``).
    max_new_tokens
        Tokens to generate per prompt.
    """
    from dlbacktrace.io.kinds.text import texts_from_file
    from dlbacktrace.tasks.text import explain_generation

    prompts = texts + [t for p in files for t in texts_from_file(p)]
    if not prompts:
        raise typer.BadParameter("give a prompt with --text or a .txt/.jsonl file")
    with console.status(f"Generating and explaining {len(prompts)} prompt(s)..."):
        gens = [explain_generation(loaded.model, loaded.tokenizer, prompt,
                                   max_new_tokens=max_new_tokens, mode=mode)
                for prompt in prompts]
    if fmt == "report":
        from dlbacktrace.report import write_html
        from dlbacktrace.report.results import generation_report

        path = write_html(generation_report(gens), out or Path("report.html"))
        console.print(f"Report written to [bold]{path}[/bold]")
    elif fmt == "json":
        write_json(generation_json(gens), out)
    else:
        console.print(generation_table(generation_json(gens)))
    return gens

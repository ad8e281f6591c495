"""Smoke test of ``benchmarks/bench_core.py`` (quick mode, smallest case) and its counters.

The benchmark is not part of the package, so a broken one would otherwise go unnoticed until
someone runs it; this checks that it still produces every table it promises.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
RATIO = re.compile(r"^\d+\.\d+x( \(min \d+\.\d+x\))?( \[(\d+)\])?$")
DASH = re.compile(r"^– \[(\d+)\]$")
COLUMNS = [
    "dlbacktrace default",
    "dlbacktrace contrast",
    "Captum LRP",
    "Zennit EpsilonPlusFlat",
    "IG-50",
]


def _load(module: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    spec = importlib.util.spec_from_file_location(module, BENCH_DIR / f"{module}.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module, mod)
    spec.loader.exec_module(mod)
    return mod


def _table_after(text: str, caption: str) -> list[dict[str, str]]:
    """The Markdown table that follows the line starting with ``caption``, as row dicts."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(caption))
    rows = []
    header = None
    for line in lines[start + 1 :]:
        if not line.strip():
            if header is not None:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set(line) <= set("|-: "):
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


def test_counting_hand_counted_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = _load("_counting", monkeypatch)
    x = torch.tensor([[1.0, -2.0], [3.0, 0.0]])

    def call() -> torch.Tensor:
        y = (x * 2).sum()  # mul, sum
        y.item()  # item -> _local_scalar_dense
        bool(y > 0)  # gt, __bool__ -> _local_scalar_dense
        x[x > 0]  # gt, boolean index (a host read, no Python sync call)
        return y

    _, counts = counting.count_call(call)
    assert counts.host_sync_calls == 2
    assert counts.by_method == {"item": 1, "__bool__": 1}
    assert counts.by_op["aten._local_scalar_dense"] == 2
    assert counts.by_op["aten.gt"] == 2
    assert counts.aten_host_reads == 3  # two scalar reads and the boolean-mask index
    assert counts.aten_ops == sum(counts.by_op.values()) >= 7
    # The patched methods are gone again, also after an exception inside the count.
    assert "item" not in torch.Tensor.__dict__
    with pytest.raises(ZeroDivisionError):
        counting.count_call(lambda: 1 / 0)
    assert "__bool__" not in torch.Tensor.__dict__
    _, plain = counting.count_call(lambda: x + 1)
    assert (plain.aten_ops, plain.host_sync_calls, plain.aten_host_reads) == (1, 0, 0)


def test_peer_tables_dash_and_flag_with_footnotes(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _load("bench_core", monkeypatch)
    result = {
        "case": "toy",
        "errors": {},
        "time_ratio": {"default": 2.0, "contrast": 3.0, "ig50": 9.5},
        "min_time_ratio": {"default": 1.5, "contrast": 2.5, "ig50": 9.0},
        "memory_ratio": {"default": 1.25, "contrast": 1.5, "ig50": 4.0},
        "peer_skipped": {"captum_lrp": "TypeError: no rule", "zennit": "no rules"},
        "peer_error": {"ig50": 2.5},  # sum misses the total by 250%: flagged
        "conservation_error": {"default": 1e-7, "contrast": 2e-7},
    }
    text = bench._markdown([result])
    (times,) = _table_after(text, "Ours beside the peers")
    assert times["dlbacktrace default"] == "2.00x (min 1.50x)"
    assert times["Captum LRP"] == "– [1]" and times["Zennit EpsilonPlusFlat"] == "– [2]"
    assert times["IG-50"] == "9.50x (min 9.00x) [3]"
    (memory,) = _table_after(text, "Peak memory ÷ baseline")
    assert (memory["Captum LRP"], memory["IG-50"]) == ("– [1]", "4.00x [3]")
    assert "[1] Captum LRP on `toy`: TypeError: no rule" in text
    assert "[2] Zennit EpsilonPlusFlat on `toy`: no rules" in text
    assert "[3] IG-50 on `toy`: it runs, but its attribution sum misses" in text
    assert text.count("[1] Captum LRP") == 1  # one footnote per reason, not per table


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_bench_core_quick_smallest_case(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pytest.importorskip("captum")
    pytest.importorskip("zennit")
    bench = _load("bench_core", monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # main() sets it otherwise, for good
    out_json = tmp_path / "bench.json"
    argv = ["--quick", "--cases", "mlp_b1", "--repeats", "1", "--warmup", "0", "--in-process",
            "--json", str(out_json)]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out

    footnotes = set(re.findall(r"^\[(\d+)\] ", text, flags=re.MULTILINE))
    for caption in ("Ours beside the peers", "Peak memory ÷ baseline"):
        (row,) = _table_after(text, caption)
        assert row["case"] == "mlp_b1"
        assert list(row)[1:] == COLUMNS
        for column in COLUMNS[:2]:  # ours are always measured
            assert RATIO.match(row[column]), (caption, column, row[column])
        for column in COLUMNS[2:]:
            cell = row[column]
            number = RATIO.match(cell) or DASH.match(cell)
            assert number, (column, cell)
            assert number.groups()[-1] in footnotes | {None}, (column, cell)

    counts = _table_after(text, "Counts per call")
    by_callable = {r["callable"]: r for r in counts}
    assert {"baseline", "default", "contrast"} <= set(by_callable)
    for r in counts:
        for key in ("ATen ops", "host syncs", "ATen host reads"):
            assert re.fullmatch(r"\d+", r[key]), (r, key)
    # The explain calls dispatch more than the bare forward + gradient they are compared with.
    assert int(by_callable["default"]["ATen ops"]) > int(by_callable["baseline"]["ATen ops"]) > 0

    (result,) = json.loads(out_json.read_text())["results"]
    assert not {k: v for k, v in result["errors"].items() if k != "peers"}, result["errors"]
    assert result["counts"]["default"]["aten_ops"] == int(by_callable["default"]["ATen ops"])

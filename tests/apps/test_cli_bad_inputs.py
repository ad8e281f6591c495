"""Bad CLI inputs end with one line and exit status 2, never a traceback (issue 13 item 9)."""

from __future__ import annotations

import shutil
import struct
import zlib

import numpy as np
import pytest
from cli_assets import assets
from typer.testing import CliRunner

from dlbacktrace.apps.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def a():
    return assets()


def fails_cleanly(*args) -> str:
    result = runner.invoke(app, [str(x) for x in args])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.output


def iris(a) -> list:
    return ["--model", a.iris_spec, "--weights", a.iris_weights, "--drop", "species",
            "--no-audit"]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge image (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_npy_of_strings(a, tmp_path):
    path = tmp_path / "strings.npy"
    np.save(path, np.array(["a", "b"]))
    assert "must hold numbers" in fails_cleanly("explain", path, *iris(a))


def test_npy_header_promising_too_much(a, tmp_path):
    path = tmp_path / "huge.npy"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 4), dtype=np.float32))
    header["shape"] = (100_000_000_000, 4)
    with path.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\x00" * 64)
    assert "declares shape" in fails_cleanly("explain", path, *iris(a))


def test_truncated_weights(a, tmp_path):
    weights = tmp_path / "cut.safetensors"
    weights.write_bytes(a.iris_weights.read_bytes()[:40])
    fails_cleanly("explain", a.iris_csv, "--model", a.iris_spec, "--weights", weights,
                  "--drop", "species", "--no-audit")


def test_decompression_bomb_png(a, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(40_000, 40_000))
    spec = ["--model", "dlbacktrace.examples.demo:DigitsCNN", "--weights", a.digits_weights,
            "--no-audit"]
    assert "too large" in fails_cleanly("explain", path, *spec)


def test_out_into_a_missing_folder_fails_before_computing(a, tmp_path):
    out = tmp_path / "no" / "such" / "folder" / "r.json"
    assert "does not exist" in fails_cleanly("explain", a.iris_csv, *iris(a), "--format",
                                             "json", "--out", out)


def test_unknown_audit_url_scheme(a, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "unknown audit URL scheme" in fails_cleanly(
        "explain", a.iris_csv, "--model", a.iris_spec, "--weights", a.iris_weights,
        "--drop", "species", "--audit", "bogus://x")
    assert not (tmp_path / "bogus:").exists()


def test_verify_chain_on_a_missing_database(tmp_path):
    db = tmp_path / "missing.db"
    assert "no audit log" in fails_cleanly("audit", "verify-chain", "--db", db)
    assert not db.exists()


def test_verify_when_the_weights_are_gone(a, tmp_path):
    weights = tmp_path / "w.safetensors"
    shutil.copy(a.iris_weights, weights)
    db = tmp_path / "a.db"
    ok = runner.invoke(app, ["explain", str(a.iris_csv), "--model", a.iris_spec, "--weights",
                             str(weights), "--drop", "species", "--audit", str(db)])
    assert ok.exit_code == 0, ok.output
    weights.unlink()
    assert "file not found" in fails_cleanly("audit", "verify", "1", "--db", db)


def test_corrupt_aggregate_checkpoint(tmp_path):
    import torch

    from dlbacktrace import DLBacktraceError
    from dlbacktrace.aggregate import aggregate

    checkpoint = tmp_path / "state.npz"
    checkpoint.write_bytes(b"PK\x03\x04 definitely not a zip file")
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with pytest.raises(DLBacktraceError, match="not readable"):
        aggregate(model, torch.randn(8, 3), batch_size=4, checkpoint=checkpoint)

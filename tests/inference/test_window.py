"""The window read from a model's files (for GET /v1/models/{id}) is the one the loaded
engine enforces, for the real bundled models and a GGUF header."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from inference.window import declared_window, gguf_context_length, spec_window

from .helpers import minilm_spec, smol_spec


@pytest.mark.model
def test_files_declare_what_the_loaded_models_enforce(smol, minilm):
    assert spec_window(smol_spec(), 2048) == smol.context_length == 8192
    assert spec_window(minilm_spec(), 2048) == minilm.max_length == 256


def test_registry_override_wins():
    assert spec_window(smol_spec(max_context_tokens=1000), 2048) == 1000


def gguf_file(path: Path, entries: list[tuple[str, int, bytes]]) -> Path:
    def string(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    body = b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries))
    for key, kind, value in entries:
        body += string(key) + struct.pack("<I", kind) + value
    path.write_bytes(body)
    return path


def test_gguf_header(tmp_path):
    tokens = struct.pack("<IQ", 8, 2) + struct.pack("<Q", 1) + b"a" + struct.pack("<Q", 2) + b"bc"
    path = gguf_file(tmp_path / "m.gguf", [
        ("general.architecture", 8, struct.pack("<Q", 5) + b"llama"),
        ("tokenizer.ggml.tokens", 9, tokens),
        ("llama.context_length", 4, struct.pack("<I", 4096)),
    ])
    assert gguf_context_length(path) == 4096
    assert declared_window(path, "text-generation", 2048) == 4096
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(path.read_bytes()[:40])
    assert gguf_context_length(broken) is None
    assert declared_window(broken, "text-generation", 2048) == 2048  # the server default, as the engine


@pytest.mark.model
def test_header_reading_agrees_with_gguf_reader_on_the_shipped_file():
    # The window is read by hand (stopping at the entry, milliseconds) rather than with
    # gguf.GGUFReader, which parses the whole vocabulary first (seconds, on a request
    # path); gguf's own reader is the reference for the value.
    from gguf import GGUFReader

    from inference.loading import package_path

    from .helpers import SMOL_SOURCE

    path = package_path(SMOL_SOURCE)
    reader = GGUFReader(str(path))
    arch = reader.get_field("general.architecture").contents()
    assert gguf_context_length(path) == int(reader.get_field(f"{arch}.context_length").contents()) == 8192


def test_header_written_by_gguf_writer(tmp_path):
    from gguf import GGUFWriter

    writer = GGUFWriter(str(tmp_path / "w.gguf"), "qwen2")
    writer.add_context_length(32768)
    writer.add_token_list(["a", "bc", "def"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    assert gguf_context_length(tmp_path / "w.gguf") == 32768


def test_folder_without_limits_gets_the_default(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text('{"model_max_length": 1e30}')
    assert declared_window(tmp_path, "text-generation", 3000) == 3000
    (tmp_path / "config.json").write_text('{"n_positions": 1024}')  # GPT-2's name for it
    assert declared_window(tmp_path, "text-generation", 3000) == 1024

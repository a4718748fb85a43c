"""lua_core.fileio: the one atomic write, safetensors header reader and tensor digest the package shares."""

from __future__ import annotations

import hashlib
import json
import os
import struct

import pytest
import torch
from conftest import make_model
from safetensors.torch import save_file

from lua_core.fileio import HeaderError, atomic_write, names_look_like_lua, read_safetensors_header, update_digest


def test_atomic_write_replaces_the_file_in_one_step(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    atomic_write(path, lambda tmp: open(tmp, "w").write("new"))
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["out.json"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")

    def half_then_fail(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


def test_header_reader_reads_only_the_header(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.zeros(2, 3)}, str(path), metadata={"k": "v"})
    header, start = read_safetensors_header(path)
    assert header["__metadata__"] == {"k": "v"} and header["a"]["shape"] == [2, 3]
    assert start == path.stat().st_size - 2 * 3 * 4


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "not a safetensors file (0 bytes"),
        (struct.pack("<Q", 10**12) + b"{}", "no valid header length"),
        (struct.pack("<Q", 4) + b"{x}!", "damaged safetensors header"),
        (struct.pack("<Q", 2) + b"[]", "damaged safetensors header (not a JSON object)"),
    ],
)
def test_header_reader_names_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(HeaderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_safetensors_header(path)


def test_digest_equals_the_trainers_state_checksum():
    # so lua_core/train/distributed.py (state_checksum) and train/data.py (cache_key) can switch to it unchanged
    from lua_core.train.distributed import state_checksum

    net = make_model().net
    h = hashlib.sha256()
    update_digest(h, net.state_dict().items())
    assert h.hexdigest() == state_checksum(net)
    other = hashlib.sha256()
    update_digest(other, make_model(seed=1).net.state_dict().items())
    assert other.hexdigest() != h.hexdigest()


def test_lua_key_signatures_tell_lua_from_other_state_dicts():
    """One rule for "is this LUA": whole key lists (checkpoint loading) and raw headers (folder listing) agree."""
    v1 = ["conv_first.weight", "heads.x2.conv_last.weight", "layers.0.residual_group.blocks.0.attn.qkv.weight"]
    v2 = ["prior.decoder.1.weight", "stems.x2.weight", "heads.x2.weight", "trunk.0.conv1.weight"]
    pixel_swinir = ["conv_first.weight", "conv_last.weight", "layers.0.residual_group.blocks.0.attn.qkv.weight"]
    prefixed_v2 = ["model." + k for k in v2]
    for keys, lua in ((v1, True), (v2, True), (pixel_swinir, False), (v1[:2], False)):
        assert names_look_like_lua("\n".join(keys), whole_names=True) is lua, keys
        assert names_look_like_lua(json.dumps(dict.fromkeys(keys, {}))) is lua, keys  # a safetensors header
    assert not names_look_like_lua("\n".join(prefixed_v2), whole_names=True)  # whole names only

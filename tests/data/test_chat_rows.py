"""read_chat_rows: a JSONL file of chat rows, validated as prepare_dataset validates them, errors naming file:line."""

from __future__ import annotations

import json

import pytest

from emflow.data.chat_rows import read_chat_rows
from emflow.errors import EmflowError

ROW = {"messages": [{"role": "user", "content": "q\u2028still q"}, {"role": "assistant", "content": "a"}]}


def test_rows_come_back_validated(tmp_path):
    path = tmp_path / "train.jsonl"
    extra = {**ROW, "id": 3}
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(extra, ensure_ascii=False) + "\n\n" + json.dumps(ROW)).encode())
    assert read_chat_rows(path) == [ROW, ROW]


@pytest.mark.parametrize(
    "text, needle",
    [
        (json.dumps(ROW) + "\n{oops\n", ":2: not valid JSON"),
        (json.dumps(ROW) + "\n" + json.dumps({"messages": [{"role": "user", "content": "q"}]}), ":2: messages"),
        ("\n\n", ": no rows"),
    ],
)
def test_bad_rows_are_one_line_naming_file_and_line(tmp_path, text, needle):
    path = tmp_path / "train.jsonl"
    path.write_text(text)
    with pytest.raises(EmflowError) as err:
        read_chat_rows(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}") and needle in msg and "\n" not in msg


def test_missing_or_non_utf8_file_is_one_line(tmp_path):
    with pytest.raises(EmflowError, match="does not exist"):
        read_chat_rows(tmp_path / "absent.jsonl")
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(EmflowError, match="not UTF-8"):
        read_chat_rows(bad)

"""The run journal (rows.jsonl): a torn last line left by a killed run is dropped, any other line
that does not parse is an error naming the file and the line, and a writer reopening a journal
(a resumed run) never glues its first row onto a torn line."""
from __future__ import annotations

import json

import pytest

from harness.errors import ConfigError
from harness.reporting.writer import ROWS_FILE, RowWriter, read_rows

ROWS = [{"task_id": f"t{i}", "engine": "e", "ec": i % 2, "text": "é✓"} for i in range(4)]


def _line(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def _journal(tmp_path, text: str | bytes):
    path = tmp_path / ROWS_FILE
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_whole_journal_reads_back(tmp_path):
    writer = RowWriter(tmp_path)
    for r in ROWS:
        writer.append(r)
    writer.close()
    assert read_rows(tmp_path) == ROWS


def test_torn_last_line_is_dropped_silently(tmp_path):
    whole = "".join(_line(r) for r in ROWS[:3])
    _journal(tmp_path, whole + _line(ROWS[3])[:25])  # killed mid-write: no trailing newline
    assert read_rows(tmp_path) == ROWS[:3]


def test_torn_last_line_cut_inside_a_utf8_character(tmp_path):
    whole = "".join(_line(r) for r in ROWS[:3]).encode()
    torn = _line(ROWS[3]).encode()
    cut = torn.index("✓".encode()) + 1  # inside the 3-byte character
    _journal(tmp_path, whole + torn[:cut])
    assert read_rows(tmp_path) == ROWS[:3]


@pytest.mark.parametrize("bad", ['{"task_id": "t1", "engine": "e", "ec"', "not json at all", "[1, 2]"])
def test_corrupt_line_in_the_middle_names_file_and_line(tmp_path, bad):
    lines = [_line(ROWS[0]), _line(ROWS[1]), bad + "\n", _line(ROWS[2])]
    path = _journal(tmp_path, "".join(lines))
    with pytest.raises(ConfigError) as exc:
        read_rows(tmp_path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:3: ") and "\n" not in msg


def test_corrupt_last_line_with_its_newline_is_an_error(tmp_path):
    """A kill leaves a line without its newline; a damaged line that has one is not a torn write."""
    _journal(tmp_path, _line(ROWS[0]) + '{"task_id": "t1", "eng\n')
    with pytest.raises(ConfigError, match=r"rows\.jsonl:2: "):
        read_rows(tmp_path)


def test_invalid_utf8_in_the_middle_is_an_error(tmp_path):
    _journal(tmp_path, _line(ROWS[0]).encode() + b'{"text": "\xff"}\n' + _line(ROWS[1]).encode())
    with pytest.raises(ConfigError, match=r"rows\.jsonl:2: .*UTF-8"):
        read_rows(tmp_path)


def test_blank_lines_are_ignored(tmp_path):
    _journal(tmp_path, _line(ROWS[0]) + "\n  \n" + _line(ROWS[1]))
    assert read_rows(tmp_path) == ROWS[:2]


def test_resumed_writer_cuts_a_torn_tail_before_appending(tmp_path):
    """Without the cut, the first new row would be glued onto the torn line, making a corrupt
    line in the middle of the journal (an error on every later read)."""
    _journal(tmp_path, _line(ROWS[0]) + _line(ROWS[1])[:20])
    writer = RowWriter(tmp_path)
    writer.append(ROWS[2])
    writer.close()
    assert read_rows(tmp_path) == [ROWS[0], ROWS[2]]


def test_resumed_writer_keeps_a_whole_last_row_missing_only_its_newline(tmp_path):
    _journal(tmp_path, _line(ROWS[0]) + _line(ROWS[1]).rstrip("\n"))
    assert read_rows(tmp_path) == ROWS[:2]
    writer = RowWriter(tmp_path)
    writer.append(ROWS[2])
    writer.close()
    assert read_rows(tmp_path) == ROWS[:3]


def test_resumed_writer_on_a_journal_that_is_one_torn_line(tmp_path):
    _journal(tmp_path, _line(ROWS[0])[:10])
    writer = RowWriter(tmp_path)
    writer.append(ROWS[1])
    writer.close()
    assert read_rows(tmp_path) == [ROWS[1]]

"""continualcode.intent on corrections: which ask for an answer in words and which for a call."""

from __future__ import annotations

import pytest

from continualcode.intent import asks_for_words


@pytest.mark.parametrize("correction", [
    "you already read parse_timezone: answer in one sentence what it returns for 'Z'",
    "just tell me the answer", "stop reading and answer", "explain it from what you read",
])
def test_a_correction_asking_for_words(correction):
    assert asks_for_words(correction)


@pytest.mark.parametrize("correction", [
    "use grep first", "do not read files: run the tests with bash, python -m pytest -q",
    "put it at the end of the file, after the last line: edit_lines with start_line 163 and end_line 162",
    "read notes.txt with the read tool", "use edit_lines at the end of the file, and add a docstring",
    "run the test suite to answer that, don't read the source",  # bench learn's: a call, for a purpose
])
def test_a_correction_asking_for_a_call(correction):
    assert not asks_for_words(correction)

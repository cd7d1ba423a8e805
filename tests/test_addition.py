"""Where one definition written alone over its module goes (tools/addition.py), and what holds a line
(tools/syntax.enclosing_start): pure text."""

from __future__ import annotations

import pytest

from continualcode.tools.addition import placed, unwrap_html

MODULE = ("import re\n\n\nclass Scheduler:\n    def __init__(self):\n        self.jobs = []\n\n"
          "    def run(self):\n        pass\n\n\n@cache\ndef every(n):\n    return n\n")


def test_a_new_function_goes_after_the_last_line_with_two_blank_lines_before_it():
    new = "def parse_all(f, ss):\n    return ss"
    assert placed(MODULE, new + "\n") == (15, 14, "\n\n" + new)
    assert placed(MODULE + "\n\n", "def f():\n    pass\n") == (17, 16, "def f():\n    pass")  # blanks are there


def test_a_function_of_the_same_name_replaces_the_old_one_and_its_decorators():
    assert placed(MODULE, "def every(n):\n    return n + 1\n") == (12, 14, "def every(n):\n    return n + 1")


def test_a_class_of_the_same_name_adds_its_new_methods_at_the_end_of_that_class_at_its_indentation():
    start, end, text = placed(MODULE, "class Scheduler:\n  def __len__(self):\n    return len(self.jobs)\n")
    assert (start, end) == (10, 9) and text == "\n    def __len__(self):\n      return len(self.jobs)"
    lines = MODULE.splitlines()
    after = "\n".join(lines[:end] + text.split("\n") + lines[end:])
    compile(after, "m.py", "exec")
    assert "def __len__" in after.split("\n\n\n@cache")[0]  # inside the class, before the next definition


@pytest.mark.parametrize("content", [
    "class Scheduler:\n    def run(self):\n        return 1\n",  # a method the class has: which one is meant?
    "def __len__(self):\n    return 1\n",  # a lone method: its class is a guess
    "x = 1\n", "def a():\n    pass\n\n\ndef b():\n    pass\n",  # not one definition
    "def broken(:\n", "class Scheduler: pass\n",
])
def test_what_is_not_one_placeable_definition_is_left_alone(content):
    assert placed(MODULE, content) is None
    assert placed("def broken(:\n", "def f():\n    pass\n") is None  # a module that does not parse


def test_unwrap_html_undoes_a_web_pages_code_wrapping_only():
    wrapped = "<pre><code>def f(a):<br>    return a &lt; 1<br/></code></pre>"
    assert unwrap_html(wrapped) == "def f(a):\n    return a < 1\n"
    assert unwrap_html("<pre>x = 1</pre>\n") == "x = 1"
    assert unwrap_html("x = '<br>' &lt;") == "x = '<br>' &lt;"


def test_enclosing_start_is_the_innermost_function_or_class_else_the_top_level_statement():
    from continualcode.tools.syntax import enclosing_start

    src = ("import re\n\nUNCOUNTABLES = {\n    'a',\n    'sheep',\n}\n\n\nclass A:\n    x = 1\n\n"
           "    @property\n    def f(self):\n        y = 2\n        return y\n")
    assert [enclosing_start(src, n) for n in (1, 2, 5, 10, 12, 13, 15, 16)] == [1, None, 3, 9, 12, 12, 12, None]
    assert enclosing_start("def broken(:\n", 1) is None

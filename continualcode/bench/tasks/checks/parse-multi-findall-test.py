import pathlib
import re

src = pathlib.Path("tests/test_findall.py").read_text()
assert len(re.findall(r"^\s*def test_", src, re.M)) >= 4, "no new test function in tests/test_findall.py"
assert "333" in src and "findall" in src, "the new test does not check the example"

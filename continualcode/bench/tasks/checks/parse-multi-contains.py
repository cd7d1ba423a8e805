import parse

r = parse.parse("{name} {}", "bob 1")
assert "name" in r, "'name' in result is False"
assert "other" not in r, "'other' in result is True"

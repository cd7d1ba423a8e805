import parse

for text, want in (("50%", 0.5), ("100%", 1.0), ("12.5%", 0.125)):
    got = parse.parse("{:%}", text)[0]
    assert abs(got - want) < 1e-9, f"{text} -> {got}"

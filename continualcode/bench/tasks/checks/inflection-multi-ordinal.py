from inflection import ordinalize

for n, want in ((13, "13th"), (113, "113th"), (11, "11th"), (23, "23rd"), (2, "2nd")):
    assert ordinalize(n) == want, f"ordinalize({n}) = {ordinalize(n)!r}"

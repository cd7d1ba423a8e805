from parse import parse_all

r = parse_all("{:d}-{:d}", ["1-2", "x", "3-4"])
assert len(r) == 3, r
assert r[1] is None, r
assert r[0].fixed == (1, 2) and r[2].fixed == (3, 4), r

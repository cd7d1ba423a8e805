import xmltodict

got = xmltodict.parse("<a><b>1</b><b>2</b><b>3</b></a>")
assert got == {"a": {"b": ["1", "2", "3"]}}, got

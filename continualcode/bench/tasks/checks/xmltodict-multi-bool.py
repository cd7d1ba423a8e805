import xmltodict

got = xmltodict.unparse({"a": {"flag": True}}, full_document=False)
assert got == "<a><flag>true</flag></a>", got
got = xmltodict.unparse({"a": False}, full_document=False)
assert got == "<a>false</a>", got

import xmltodict

assert hasattr(xmltodict, "_emit_element"), "no _emit_element"
assert not hasattr(xmltodict, "_emit"), "_emit is still there"
assert xmltodict.unparse({"a": {"b": "1"}}, full_document=False) == "<a><b>1</b></a>"

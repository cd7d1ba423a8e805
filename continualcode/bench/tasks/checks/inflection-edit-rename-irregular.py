import pathlib

import inflection

src = pathlib.Path("inflection/__init__.py").read_text()
assert hasattr(inflection, "_add_irregular"), "inflection has no _add_irregular"
assert "_irregular(" not in src.replace("_add_irregular(", ""), "_irregular is still defined or called"
assert inflection.pluralize("person") == "people", "irregular plurals are broken"

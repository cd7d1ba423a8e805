"""What kind of file a project path is, by its name alone: source code, secondary (tests, set-up scripts,
code under docs and examples) or other (text: docs, licences, metadata).  The file listing, the definitions
map and grep's hits put the code first (context.py, tools/search.py).  Pure: names in, ranks out."""

from __future__ import annotations

CODE_SUFFIXES = (".py", ".pyi", ".pyx", ".js", ".jsx", ".ts", ".tsx", ".go", ".rs", ".c", ".h", ".cc", ".cpp",
                 ".hpp", ".java", ".kt", ".rb", ".php", ".cs", ".swift", ".scala", ".sh", ".lua")


def listing_rank(rel: str) -> int:
    """0 for source code, 1 for tests and set-up scripts, 2 for the rest.  The 0.5B model opened 5 of the
    16 test tasks of `bench tasks` by reading the first file the listing showed when that was LICENSE or
    AUTHORS.rst (a root file, listed before the package's code by depth and name)."""
    if not rel.endswith(CODE_SUFFIXES):
        return 2
    return 1 if is_secondary(rel) else 0


def is_secondary(rel: str) -> bool:
    """Tests, set-up scripts and docs: mapped after the code, if the budget allows."""
    name = rel.rsplit("/", 1)[-1]
    parts = rel.split("/")[:-1]
    return (name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"
            or name.endswith("setup.py")
            or any(p in ("tests", "test", "docs", "doc", "examples") for p in parts))

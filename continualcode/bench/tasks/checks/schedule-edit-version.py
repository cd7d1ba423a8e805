import pathlib
import re

src = pathlib.Path("setup.py").read_text()
assert re.search(r"SCHEDULE_VERSION\s*=\s*['\"]1\.2\.3['\"]", src), "setup.py's SCHEDULE_VERSION is not 1.2.3"
assert "1.2.2" not in src, "setup.py still says 1.2.2"

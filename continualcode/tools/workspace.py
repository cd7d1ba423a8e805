"""`Workspace`: a confined directory, the tools' settings, and the two calls the agent makes.

`run(name, args)` executes one call and never raises: unknown tools, bad arguments, refusals
(`ToolError`), OS errors and any other exception come back as `ToolResult(ok=False, output="error:
<one line>")`, because whatever happens is shown to the model as the tool result. `preview(name,
args)` is the text the user approves, with the same promise. Both look the tool up in the table
(table.py); confinement is `ConfinedDir` (paths.py); every output is capped at `result_cap`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from continualcode.tools.base import ToolError, ToolResult, cap_text, clean, one_line
from continualcode.tools.paths import ConfinedDir
from continualcode.tools.table import TOOLS, validate_args

DEFAULT_RESULT_CAP = 12000  # characters of one tool result shown to the model
DEFAULT_BASH_TIMEOUT = 60  # seconds a bash call may run when the model gives no timeout


class Workspace(ConfinedDir):
    """A directory the tools are confined to, and the settings they run with."""

    def __init__(
        self,
        root: Path,
        *,
        result_cap: int = DEFAULT_RESULT_CAP,
        bash_timeout: int = DEFAULT_BASH_TIMEOUT,
        pass_secrets: bool = False,
    ) -> None:
        super().__init__(root)
        if result_cap < 500:
            raise ValueError("result_cap must be at least 500")
        self.result_cap = result_cap
        self.bash_timeout = bash_timeout
        self.pass_secrets = pass_secrets

    def run(self, name: str, args: Mapping[str, Any]) -> ToolResult:
        """Execute one tool call. Never raises."""
        try:
            kwargs = validate_args(name, args)  # first: it is what refuses an unknown name
            ok, output = TOOLS[name].run(self, **kwargs)
        except Exception as e:  # the model must always get an answer
            ok, output = False, f"error: {one_line(self._explain(e))}"
        return ToolResult(ok, cap_text(clean(output), self.result_cap))

    def preview(self, name: str, args: Mapping[str, Any]) -> str:
        """What the user sees before approving the call; computed without touching disk. Never raises."""
        try:
            kwargs = validate_args(name, args)
            text = TOOLS[name].preview(self, **kwargs)
        except Exception as e:
            text = f"error: {one_line(self._explain(e))}"
        return cap_text(clean(text), self.result_cap)

    def _explain(self, e: Exception) -> str:
        if isinstance(e, ToolError):
            return str(e)
        if isinstance(e, OSError):
            return self.os_message(e)
        return f"{type(e).__name__}: {e}"

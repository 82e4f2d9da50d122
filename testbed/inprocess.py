"""ComfyUI in this Python process: real nodes, real validation, real PromptExecutor (ComfyUI 0.3.75 and 0.28.2)."""
from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .env import PACK_NODE_DIR_NAME, comfyui_path
from .pack import share_with_comfyui

PACK_NODES = ("LuneModelLoader", "LuneShift", "LuneLatentMultiply", "LuneSamplerAdapter")


def _comfy_first_on_path() -> None:
    """ComfyUI's root goes first on the path, as when ComfyUI's main.py runs: its top-level modules (``nodes``,
    ``server``, ``utils``) must win over same-named folders elsewhere on the path (pytest puts the repository root
    there; the pack itself is imported only as ``comfyui_lune``, testbed.pack)."""
    root = str(comfyui_path())
    while root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)


def configure_args(base_dir: Path) -> None:
    """Put ComfyUI on the path and set its CLI args (CPU, base directory) before any other comfy import."""
    _comfy_first_on_path()
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.base_directory = str(base_dir)
    comfy.cli_args.args.disable_api_nodes = True


class _StubServer:
    """What PromptExecutor needs of PromptServer: a client id and a message sink."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: list[tuple[str, dict]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


@dataclass
class RunResult:
    ok: bool
    prompt_id: str
    outputs: dict = field(default_factory=dict)
    error: dict | None = None
    messages: list = field(default_factory=list)

    def error_message(self) -> str:
        return "" if self.error is None else str(self.error.get("exception_message") or self.error)


class InProcessComfy:
    """Boot ComfyUI once per process with ``base_dir`` as --base-directory and the pack loaded."""

    _booted: "InProcessComfy | None" = None

    def __init__(self, base_dir: Path):
        if InProcessComfy._booted is not None:
            raise RuntimeError("ComfyUI can be booted only once per process")
        self.base_dir = base_dir
        configure_args(base_dir)
        import folder_paths

        if Path(folder_paths.base_path).resolve() != base_dir.resolve():
            raise RuntimeError(f"folder_paths was imported before configure_args({base_dir}); call it earlier "
                               "(tests/conftest.py does so in pytest_configure)")
        _comfy_first_on_path()
        import utils.install_util  # noqa: F401  (ComfyUI's own package; must precede `nodes`)
        import server  # noqa: F401
        import execution
        import nodes

        share_with_comfyui(base_dir / "custom_nodes" / PACK_NODE_DIR_NAME)
        self._log = _CaptureImportFailures()
        logging.getLogger().addHandler(self._log)
        try:
            asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        finally:
            logging.getLogger().removeHandler(self._log)
        missing = [n for n in PACK_NODES if n not in nodes.NODE_CLASS_MAPPINGS]
        if missing or self._log.failures:
            raise RuntimeError(f"the pack did not import: missing {missing}; {self._log.failures}")
        self.nodes = nodes
        self.execution = execution
        self.server = _StubServer()
        self.executor = execution.PromptExecutor(self.server, cache_type=execution.CacheType.CLASSIC,
                                                 cache_args=_cache_args(execution))
        InProcessComfy._booted = self

    def run(self, prompt: dict) -> RunResult:
        """Validate and execute an API-format prompt; returns outputs or the execution/validation error."""
        prompt = copy.deepcopy(prompt)  # the executor writes into it (e.g. "is_changed"), as the server's copy
        prompt_id = str(uuid.uuid4())
        valid = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
        if not valid[0]:
            return RunResult(False, prompt_id, error={"validation": valid[1], "node_errors": valid[3],
                                                       "exception_message": f"{valid[1]} {valid[3]}"})
        self.server.messages.clear()
        self.executor.execute(prompt, prompt_id, {"client_id": "lune-tests"}, valid[2])
        messages = list(self.server.messages)
        errors = [d for e, d in messages if e == "execution_error"]
        return RunResult(self.executor.success, prompt_id, outputs=self.executor.history_result.get("outputs", {}),
                         error=errors[0] if errors else None, messages=messages)

    def output_files(self, result: RunResult, kind: str = "images") -> list[Path]:
        files = []
        for out in result.outputs.values():
            for item in out.get(kind, []):
                files.append(self.base_dir / "output" / item.get("subfolder", "") / item["filename"])
        return files


def _cache_args(execution) -> dict:
    """PromptExecutor's ``cache_args`` as this ComfyUI's main.py builds them, with every cache size 0: "lru" and
    "ram" (0.3.75), plus "ram_inactive" where ``execute_async`` reads it (0.28.2's, since 0.23: a KeyError without)."""
    args = {"lru": 0, "ram": 0}
    if "ram_inactive" in inspect.getsource(execution.PromptExecutor):
        args["ram_inactive"] = 0
    return args


class _CaptureImportFailures(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.failures: list[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if PACK_NODE_DIR_NAME in msg and ("IMPORT FAILED" in msg or "Cannot import" in msg):
            self.failures.append(msg)

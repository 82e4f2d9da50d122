"""The pack's root __init__ imports cleanly without ComfyUI and registers nothing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACK = Path(__file__).resolve().parents[2]


def test_root_init_without_comfy_registers_nothing():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ComfyUI_Lune', {str(PACK / '__init__.py')!r},"
        f" submodule_search_locations=[{str(PACK)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['ComfyUI_Lune'] = m; spec.loader.exec_module(m)\n"
        "assert m.NODE_CLASS_MAPPINGS == {} and m.WEB_DIRECTORY == './web'\n"
        "assert 'comfy' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_library_never_imports_comfy():
    for package in ("lune", "lyra"):
        for path in (PACK / package).rglob("*.py"):
            text = path.read_text()
            for bad in ("import comfy", "from comfy", "import folder_paths", "import nodes"):
                assert bad not in text, f"{path} contains {bad!r}"

"""Optional downloads from the Hugging Face Hub (never at import time; huggingface_hub imported lazily).

Order of lookup for ``fetch(repo, file, local_dir)``:
  1. ``local_dir/file`` already there (a previous download into ComfyUI's model folder) → use it;
  2. the standard HF cache (``~/.cache/huggingface`` / ``HF_HOME``), without network → use it in place;
  3. unless offline (``HF_HUB_OFFLINE=1`` or ``offline=True``): download into ``local_dir`` with progress.
Offline with nothing cached raises MissingComponentError saying where to put the file.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

from .errors import MissingComponentError

log = logging.getLogger("lune")

ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes total)


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _progress_class(callback: ProgressCallback | None):
    from huggingface_hub.utils import tqdm as hf_tqdm

    if callback is None:
        return hf_tqdm

    class ForwardingTqdm(hf_tqdm):
        def update(self, n=1):
            out = super().update(n)
            if self.total:
                callback(int(self.n), int(self.total))
            return out

    return ForwardingTqdm


def fetch(repo_id: str, filename: str, local_dir: str, progress: ProgressCallback | None = None,
          offline: bool | None = None) -> str:
    """Path of ``filename`` from ``repo_id``: from local_dir, the HF cache, or a fresh download (see module doc)."""
    target = os.path.join(local_dir, filename)
    if os.path.isfile(target):
        return target
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return huggingface_hub.hf_hub_download(repo_id, filename, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    offline = _offline_env() if offline is None else offline
    if offline:
        raise MissingComponentError(
            f"{repo_id}/{filename} is not downloaded and Hugging Face is offline (HF_HUB_OFFLINE=1 or no network). "
            f"Download it on a connected machine into {local_dir} (or the HF cache) and try again.")
    log.info("downloading %s/%s into %s", repo_id, filename, local_dir)
    try:
        return huggingface_hub.hf_hub_download(repo_id, filename, local_dir=local_dir,
                                               tqdm_class=_progress_class(progress))
    except Exception as e:  # network, auth, missing file: all end the same way for the user
        raise MissingComponentError(
            f"could not download {repo_id}/{filename} ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            f"Check the connection, or place the file in {local_dir} yourself.") from None

"""Reaching the Hugging Face hub without hanging when it is not there.

huggingface_hub retries an unreachable host with back-off for minutes, and a few loaders then
"succeed" with empty objects. Every hub access in gpt2core goes through ``from_cache_or_hub``:
the local cache first (no network), then one quick TCP probe, and only then the real download.
Offline it fails within seconds with a ``HubUnavailableError`` that names the way out.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from typing import Callable, TypeVar
from urllib.parse import urlparse

from gpt2core.errors import HubUnavailableError

T = TypeVar("T")
PROBE_TIMEOUT_S = 3.0  # long enough for a slow VPN, short enough not to feel like a hang


def hub_offline_by_choice() -> bool:
    """The user (or CI) said offline with the standard environment variables."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


@lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """Whether a TCP connection to the hub's host opens (cached for the process)."""
    if hub_offline_by_choice():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def from_cache_or_hub(
    load: Callable[[bool], T], what: str, hint: str, complete: Callable[[T], bool] = lambda _: True
) -> T:
    """Run ``load(local_files_only)``: from the cache first, from the hub if it is reachable.

    ``what`` names the thing ("the GPT-2 tokenizer 'gpt2'"), ``hint`` the offline way out, and
    ``complete`` tells a real result from the empty shell some loaders return for missing files.
    """
    try:
        cached = load(True)
        if complete(cached):
            return cached
    except Exception:
        pass  # not in the cache (or the cache is partial); the hub may still have it
    if not hub_reachable():
        raise HubUnavailableError(f"{what} is not in the local cache and the Hugging Face hub is unreachable; {hint}")
    try:
        fetched = load(False)
    except Exception as exc:
        raise HubUnavailableError(f"cannot load {what} from the Hugging Face hub ({type(exc).__name__}: {exc}); {hint}") from None
    if not complete(fetched):
        raise HubUnavailableError(f"the Hugging Face hub returned an incomplete {what}; {hint}")
    return fetched

"""Memory sizes written by people ("2GiB", "512MB", "0.25"), and what is free now.

Torch-free, so the settings module can validate ``KV_CACHE_MEMORY`` at start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import re

log = logging.getLogger(__name__)

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


def parse_memory(text: str) -> int | float:
    """Bytes (an int, e.g. from "2GiB" or "1500000000") or a fraction of the memory
    available when the model loads (a float in (0, 1], e.g. from "0.2")."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text or "")
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size: use bytes (2147483648, 2GiB, 512MB) or a fraction like 0.2")
    number, unit = float(m.group(1)), m.group(2).lower()
    if not unit and "." in m.group(1):
        if not 0 < number <= 1:
            raise ValueError(f"{text!r}: a fraction of available memory must be in (0, 1]")
        return number
    return int(number * _UNITS[unit])


def available_bytes(device_type: str) -> int:
    """Memory a new allocation can take now on this device kind (CPU: MemAvailable)."""
    if device_type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def budget_bytes(setting: int | float, device_type: str) -> int:
    """The pool's bytes: a fraction of what is available now, or the bytes asked for but
    never more than is available now (the pool is committed as it is written, so a
    budget the machine cannot hold would fail later, under load, instead of at load)."""
    available = available_bytes(device_type)
    if isinstance(setting, float):
        return int(setting * available)
    if setting > available:
        log.warning("KV_CACHE_MEMORY asks for %d bytes but only %d are available: the pool gets %d",
                    setting, available, available)
        return available
    return int(setting)


def _load_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _load_trim()
TRIM_AVAILABLE = _malloc_trim is not None


def give_back_freed_memory() -> bool:
    """Ask glibc to return freed heap memory to the system (``malloc_trim``), so the
    temporaries of a model load or unload, or a large request body, do not stay in the
    resident size. False where the C library has no such call."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True

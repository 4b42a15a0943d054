"""Caches kept from one scrape cycle to the next: a run scrapes the same series every 15 s, so what was read or
written for them once is looked up after. Each is bounded: past its limit it starts over, which bounds its memory
(a large target's one-off values would otherwise pile up) and costs only its speed."""


def remember(cache: dict, key, value, limit: int):
    """Keep ``value`` under ``key``, emptying ``cache`` first if it holds ``limit`` entries; returns ``value``."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value

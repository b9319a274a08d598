"""CPU µs per delivery per component: CPU seconds of each process tree ÷ deliveries.

The components are the bench's process names grouped: `processor-1`, `processor-2` →
processor, `senders-…` → senders; `herald` is processor + senders. The budget (issue 15)
is printed beside the figures, never asserted.
"""

from __future__ import annotations

from collections.abc import Mapping

COMPONENTS = ("processor", "senders", "herald", "kafka", "cassandra", "emulators")
HERALD = ("processor", "senders")
BUDGET_US: dict[str, float] = {"herald": 300.0, "cassandra": 100.0, "emulators": 50.0}


def component_of(process: str) -> str:
    """`senders-2` → `senders`; names without an index are components themselves."""
    head, _, index = process.rpartition("-")
    return head if head and index.isdigit() else process


def cpu_us_per_delivery(cpu_seconds: Mapping[str, float], deliveries: int) -> dict[str, float]:
    """Per component (only those measured), CPU µs per delivery; empty without deliveries."""
    if deliveries <= 0:
        return {}
    per: dict[str, float] = {}
    for process, seconds in cpu_seconds.items():
        component = component_of(process)
        per[component] = per.get(component, 0.0) + seconds
    if any(c in per for c in HERALD):
        per["herald"] = sum(per.get(c, 0.0) for c in HERALD)
    return {c: round(per[c] * 1e6 / deliveries, 1) for c in COMPONENTS if c in per}

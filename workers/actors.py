"""The dramatiq actors (``dramatiq workers.actors``): one per pipeline step, each thin."""

from __future__ import annotations

import dramatiq

from workers.broker import broker  # noqa: F401 - sets the broker before actors are declared


@dramatiq.actor(queue_name="outdial", max_retries=0)
def schedule_due() -> None:
    """Claim due jobs and dispatch them (the pipeline fills this in)."""

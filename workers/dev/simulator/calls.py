"""The simulator's calls: each one a planned timeline, its status read off the shared clock.

No task runs per call. A call's status, timestamps and analysis are derived from its plan and
the current simulated instant on every read; :class:`CallBook` keeps the calls, the per-number
dial counts and a heap of end instants, so counting the calls in progress costs only the calls
that ended since the last count. This is what lets one process hold many thousands of calls.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from workers.dev.simulator.api import CreateRequest, ListQuery
from workers.dev.simulator.scenario import Plan
from workers.dev.simulator.templates import render_templates

__all__ = ["CallBook", "SimCall"]

#: Price the simulator reports, cents per connected minute (``call_cost.combined_cost`` is in cents).
CENTS_PER_MINUTE = 7.0


@dataclass(slots=True, kw_only=True)
class SimCall:
    """One simulated call. Instants are shared-clock milliseconds."""

    call_id: str
    seq: int
    created_ms: int
    request: CreateRequest
    agent_id: str
    plan: Plan
    connect_ms: int | None
    end_ms: int | None
    reason: str | None
    final_status: str
    analysis_delay_ms: int
    stopped_ms: int | None = None
    #: Pending webhook timers by event name (set by the HTTP layer).
    timers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def planned(cls, *, call_id: str, seq: int, created_ms: int, request: CreateRequest, agent_id: str, plan: Plan,
                analysis_delay_ms: int) -> SimCall:
        return cls(call_id=call_id, seq=seq, created_ms=created_ms, request=request, agent_id=agent_id, plan=plan,
                   connect_ms=plan.connect_ms, end_ms=plan.end_ms, reason=plan.reason, final_status=plan.final_status,
                   analysis_delay_ms=analysis_delay_ms)

    def connected_at(self, now_ms: int) -> bool:
        return self.connect_ms is not None and now_ms >= self.connect_ms

    def ended_at(self, now_ms: int) -> bool:
        return self.end_ms is not None and now_ms >= self.end_ms

    def active_at(self, now_ms: int) -> bool:
        """Counts against the workspace concurrency: dialing or connected, not ended."""
        return not self.ended_at(now_ms)

    @property
    def analyzed_ms(self) -> int | None:
        return None if self.end_ms is None else self.end_ms + self.analysis_delay_ms

    def status_at(self, now_ms: int) -> str:
        if self.ended_at(now_ms):
            return self.final_status
        return "ongoing" if self.connected_at(now_ms) else "registered"

    def stop(self, now_ms: int, *, unconnected_status: str = "ended") -> bool:
        """End the call now (``manual_stopped``). False if it had already ended.

        :param unconnected_status: ``call_status`` when it is stopped before connecting.
        """
        if self.ended_at(now_ms):
            return False
        if not self.connected_at(now_ms):
            self.connect_ms = None
            self.final_status = unconnected_status
        else:
            self.final_status = "ended"
        self.end_ms = now_ms
        self.reason = "manual_stopped"
        self.stopped_ms = now_ms
        return True

    def view(self, now_ms: int, *, analysis: bool = True) -> dict[str, Any]:
        """The call object Retell would return at ``now_ms`` (``analysis=False``: without call_analysis)."""
        req = self.request
        out: dict[str, Any] = {
            "call_id": self.call_id, "call_type": "phone_call", "agent_id": self.agent_id,
            "agent_version": req.agent_version if isinstance(req.agent_version, int) else 1,
            "call_status": self.status_at(now_ms), "direction": "outbound",
            "from_number": req.from_number, "to_number": req.to_number, "data_storage_setting": "everything",
        }
        if req.metadata is not None:
            out["metadata"] = req.metadata
        if req.dynamic_variables is not None:
            out["retell_llm_dynamic_variables"] = req.dynamic_variables
        if self.connected_at(now_ms):
            out["start_timestamp"] = self.connect_ms
        if self.ended_at(now_ms):
            self._ended_fields(out)
            analyzed = self.analyzed_ms
            if analysis and analyzed is not None and now_ms >= analyzed:
                out["call_analysis"] = self._analysis()
        return out

    def _ended_fields(self, out: dict[str, Any]) -> None:
        assert self.end_ms is not None
        talked_ms = self.end_ms - self.connect_ms if self.connect_ms is not None else 0
        out["end_timestamp"] = self.end_ms
        out["duration_ms"] = talked_ms
        out["disconnection_reason"] = self.reason
        seconds = talked_ms / 1000
        out["call_cost"] = {"combined_cost": round(seconds / 60 * CENTS_PER_MINUTE, 3), "product_costs": [],
                            "total_duration_seconds": math.ceil(seconds),
                            "total_duration_unit_price": round(CENTS_PER_MINUTE / 60, 6)}
        if self.connect_ms is not None:
            lines = [("agent", "Hello, this is an automated call."), ("user", "Hi."),
                     ("agent", "Thank you, goodbye.")]
            out["transcript"] = "\n".join(f"{'Agent' if r == 'agent' else 'User'}: {t}" for r, t in lines)
            out["transcript_object"] = [{"role": r, "content": t, "words": []} for r, t in lines]
            out["recording_url"] = f"https://simulator.invalid/recordings/{self.call_id}.wav"
        out["public_log_url"] = f"https://simulator.invalid/logs/{self.call_id}.txt"

    def _analysis(self) -> dict[str, Any]:
        """The ``call_analysis`` of an ended call; templates in ``custom_analysis_data`` count from its end."""
        plan = self.plan
        assert self.end_ms is not None
        connected = self.connect_ms is not None
        successful = plan.successful and connected and self.reason != "manual_stopped"
        summary = ("The call connected and the agent delivered its message." if successful else
                   "The call reached voicemail." if plan.in_voicemail else
                   "The call did not reach the contact." if not connected else "The call ended early.")
        custom = render_templates(plan.custom_analysis_data, self.end_ms)
        return {"call_summary": summary, "call_successful": successful, "user_sentiment": plan.sentiment,
                "in_voicemail": plan.in_voicemail and connected, "custom_analysis_data": custom}

    def debug(self, now_ms: int) -> dict[str, Any]:
        """The plan behind the call, for ``GET /debug/calls/{call_id}``."""
        return {"call_id": self.call_id, "outcome": self.plan.outcome, "created_ms": self.created_ms,
                "connect_ms": self.connect_ms, "end_ms": self.end_ms, "reason": self.reason,
                "status": self.status_at(now_ms), "stopped_ms": self.stopped_ms,
                "ring_duration_ms": self.request.ring_duration_ms,
                "max_call_duration_ms": self.request.max_call_duration_ms}


class CallBook:
    """Every call, by id, in creation order and by number; and the calls in progress."""

    def __init__(self) -> None:
        self.calls: dict[str, SimCall] = {}
        self.order: list[SimCall] = []
        self.by_number: dict[str, list[SimCall]] = {}
        #: Accepted dials per number (what scenario sequences count).
        self.dial_counts: dict[str, int] = {}
        self.max_active = 0
        self._active: set[str] = set()
        self._ends: list[tuple[int, int, SimCall]] = []

    def __len__(self) -> int:
        return len(self.order)

    def get(self, call_id: str) -> SimCall | None:
        return self.calls.get(call_id)

    def next_seq(self) -> int:
        return len(self.order)

    def active_count(self, now_ms: int) -> int:
        """Calls dialing or connected at ``now_ms``."""
        ends = self._ends
        while ends and ends[0][0] <= now_ms:
            end_ms, _, call = heapq.heappop(ends)
            if call.end_ms == end_ms:
                self._active.discard(call.call_id)
        return len(self._active)

    def add(self, call: SimCall, now_ms: int, *, refused: bool = False) -> None:
        """Keep ``call``. A ``refused`` call (over the concurrency limit) is neither a dial nor in progress."""
        self.calls[call.call_id] = call
        self.order.append(call)
        self.by_number.setdefault(call.request.to_number, []).append(call)
        if refused:
            return
        self.dial_counts[call.request.to_number] = self.dial_counts.get(call.request.to_number, 0) + 1
        if call.active_at(now_ms):
            self._active.add(call.call_id)
            if call.end_ms is not None:
                heapq.heappush(self._ends, (call.end_ms, call.seq, call))
            self.max_active = max(self.max_active, self.active_count(now_ms))

    def stop(self, call: SimCall, now_ms: int, *, unconnected_status: str = "ended") -> bool:
        """Stop ``call`` now; False if it had already ended."""
        if not call.stop(now_ms, unconnected_status=unconnected_status):
            return False
        self._active.discard(call.call_id)
        return True

    def dials(self, to_number: str) -> int:
        return self.dial_counts.get(to_number, 0)

    def _candidates(self, query: ListQuery) -> Iterator[SimCall]:
        pool = self.by_number.get(query.to_number, []) if query.to_number is not None else self.order
        return reversed(pool) if query.descending else iter(pool)

    def list(self, query: ListQuery, now_ms: int) -> dict[str, Any]:
        """A v3 list-calls answer. ``pagination_key`` is the last call id of the previous page (exclusive)."""
        after_seq: int | None = None
        if query.pagination_key is not None:
            anchor = self.calls.get(query.pagination_key)
            after_seq = anchor.seq if anchor is not None else None
        items: list[dict[str, Any]] = []
        total = 0
        has_more = False
        skipped = 0
        for call in self._candidates(query):
            before_cursor = after_seq is not None and (
                call.seq >= after_seq if query.descending else call.seq <= after_seq)
            if before_cursor and not query.include_total:
                continue
            view = call.view(now_ms)
            if not query.predicate(view):
                continue
            total += 1
            if before_cursor:
                continue
            if skipped < query.skip:
                skipped += 1
                continue
            if len(items) < query.limit:
                items.append(view)
            else:
                has_more = True
                if not query.include_total:
                    break
        out: dict[str, Any] = {"items": items, "has_more": has_more,
                               "pagination_key": items[-1]["call_id"] if items and has_more else None}
        if query.include_total:
            out["total"] = total
        return out

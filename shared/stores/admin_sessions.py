"""Admin sessions of the dashboard, kept in Redis so that signing out ends them on every web dyno.

The cookie (:func:`workers.web.http.new_admin_session`) is signed and carries its expiry and a random session id;
a session is open while its key ``outdial:admin-session:<id>`` exists. Signing in writes the key with the
session's lifetime as its TTL, signing out deletes it, and every request that uses the cookie asks for it. A copied
cookie therefore stops working at the sign-out, on every dyno. Losing Redis's data signs everyone out (the safe
side); a Redis that does not answer refuses the admin session (the caller answers 503), never accepts it unchecked.
"""

from __future__ import annotations

from typing import Any

from shared.redis_keys import admin_session_key


class AdminSessions:
    """Open admin sessions, by session id.

    :param redis: a ``redis.Redis`` client.
    """

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    def open(self, session_id: str, *, ttl_s: int) -> None:
        """Record a new session, open for ``ttl_s`` seconds (its cookie's lifetime)."""
        self.redis.set(admin_session_key(session_id), "1", ex=max(1, int(ttl_s)))

    def is_open(self, session_id: str) -> bool:
        """True while the session was opened, not closed, and has not expired. Raises ``redis.RedisError`` when
        Redis cannot tell (the caller refuses the session)."""
        return bool(self.redis.exists(admin_session_key(session_id)))

    def close(self, session_id: str) -> None:
        """End the session: every copy of its cookie is refused from now on."""
        self.redis.delete(admin_session_key(session_id))

"""The core's tables a plugin may read, never write, in its own queries (reports,
aggregates the service API has no method for), inside ``sb.transaction(work,
write=False)``. The columns listed here keep their names and meaning through 0.x releases
(a change is announced in the changelog first); writes go through the service API.

``call_record``: one row per call. ``call_id`` (the channel's), ``channel``,
``direction`` (``inbound``/``outbound``), ``from_address`` and ``to_address``
(``phone:+...``), ``contact_id``, ``agent_id``, ``ringing_at``, ``answered_at``,
``ended_at`` (aware UTC), ``talk_s`` and ``wait_s`` (seconds), ``disposition``,
``recording_path`` (the recording's file, None without one).
"""

from __future__ import annotations

import sqlalchemy as sa

from switchboard.store import call_t

__all__ = ["call_record"]

call_record: sa.Table = call_t

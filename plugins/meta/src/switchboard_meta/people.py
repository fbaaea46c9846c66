"""Who wrote to which account, and what they are called.

A PSID (Messenger) or IGSID (Instagram) is scoped to one Page or Instagram account: a
reply must go out through the account the person wrote to. :class:`People` remembers it
(in memory, and in the plugin's table ``meta_peer``) and names new contacts through the
profile API, in a background task: no message waits for Meta's answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import sqlalchemy as sa

from switchboard import ChannelContext, PermanentSendError
from switchboard.outside import clean
from switchboard_meta.graph import Graph, GraphError
from switchboard_meta.settings import MetaSettings, PageSettings
from switchboard_meta.tables import peer_t

log = logging.getLogger("switchboard.channel.meta")

CACHED = 100_000  # people remembered in memory (the table has them all)
BATCH = 500  # people looked up per transaction
PROFILE_TIMEOUT = 5.0
NAME_MAX = 200
#: The profile fields asked for, per channel (Messenger's User Profile API; Instagram's
#: user profile on the IGSID).
PROFILE_FIELDS = {"messenger": "first_name,last_name", "instagram": "name,username"}


class People:
    """The people of one channel (``messenger`` or ``instagram``)."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.ctx: ChannelContext | None = None
        self.settings: MetaSettings | None = None
        self.accounts: dict[str, PageSettings] = {}
        self.graph: Graph | None = None
        self.cache: dict[str, tuple[str, str | None]] = {}  # user id: (account id, name)
        self._waiting: dict[str, str] = {}  # people for the learner: user id: account
        self._wake = asyncio.Event()

    def start(
        self,
        ctx: ChannelContext,
        settings: MetaSettings,
        accounts: dict[str, PageSettings],
        graph: Graph,
    ) -> None:
        """Start the learner, a task of the channel (people a stop interrupted first)."""
        self.ctx, self.settings, self.accounts, self.graph = ctx, settings, accounts, graph
        self._wake = asyncio.Event()  # this event loop's
        if self._waiting:
            self._wake.set()
        ctx.spawn(self._learner(), name=f"{self.channel}-profiles")

    def name(self, user: str) -> str | None:
        """The person's name, when the profile API gave it."""
        return self.cache.get(user, ("", None))[1]

    def learn(self, user: str, account: str) -> None:
        """Remember which account ``user`` wrote to (replies go out through it, at once)
        and, the first time, hand them to the learner: it stores the pair and names the
        contact through the profile API, in the background, so no message waits for
        Meta's answer."""
        if self.cache.get(user, ("",))[0] == account:
            return
        self._remember(user, account, None)
        self._waiting[user] = account
        self._wake.set()

    async def _learner(self) -> None:
        """The background task of :meth:`learn`: people in batches (one read and one
        write transaction each), their profiles looked up ``max_concurrency`` at a time."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                batch = dict(list(self._waiting.items())[:BATCH])
                await self._look_up(dict(batch))
                for user, account in batch.items():  # done: a stop before leaves them
                    if self._waiting.get(user) == account:
                        del self._waiting[user]

    async def _look_up(self, wanted: dict[str, str]) -> None:
        assert self.ctx is not None
        assert self.settings is not None
        channel = self.channel

        def known(conn: sa.Connection) -> list[Any]:
            return list(
                conn.execute(
                    sa.select(peer_t).where(
                        peer_t.c.channel == channel, peer_t.c.user_id.in_(list(wanted))
                    )
                )
            )

        for row in await self.ctx.transaction(known, write=False):
            if row.page_id == wanted.get(row.user_id):  # known from before a restart
                self._remember(row.user_id, row.page_id, row.name)
                del wanted[row.user_id]
        if not wanted:
            return
        names: dict[str, str | None] = dict.fromkeys(wanted)
        if self.settings.profile_names:
            gate = asyncio.Semaphore(self.settings.max_concurrency)

            async def name_of(user: str) -> None:
                async with gate:
                    names[user] = await self._profile_name(user, wanted[user])

            await asyncio.gather(*(name_of(u) for u in wanted))

        def store(conn: sa.Connection) -> None:
            conn.execute(
                sa.delete(peer_t).where(
                    peer_t.c.channel == channel, peer_t.c.user_id.in_(list(wanted))
                )
            )
            conn.execute(
                sa.insert(peer_t),
                [
                    {"channel": channel, "user_id": u, "page_id": a, "name": names[u]}
                    for u, a in wanted.items()
                ],
            )

        await self.ctx.transaction(store)
        for user, account in wanted.items():
            name = names[user]
            if self.cache.get(user, ("",))[0] == account:
                self._remember(user, account, name)
            if name:
                await self.ctx.name_contact(f"{self.channel}:{user}", name)

    def _remember(self, user: str, account: str, name: str | None) -> None:
        if len(self.cache) >= CACHED:
            self.cache.clear()  # read again from the table when needed
        self.cache[user] = (account, name)

    async def _profile_name(self, user: str, account: str) -> str | None:
        """The person's name from the profile API, or None (not shared, not answered)."""
        assert self.graph is not None
        try:
            found = await asyncio.wait_for(
                self.graph.get(
                    user, self.accounts[account].access_token, PROFILE_FIELDS[self.channel]
                ),
                PROFILE_TIMEOUT,
            )
        except (GraphError, TimeoutError) as exc:
            log.info("%s: no profile for %s: %s", self.channel, user, exc)
            return None
        if self.channel == "messenger":
            parts = [clean(found.get(k), NAME_MAX) for k in ("first_name", "last_name")]
            name = " ".join(p for p in parts if p)
        else:
            name = clean(found.get("name") or found.get("username"), NAME_MAX) or ""
        return name[:NAME_MAX] or None

    async def account_for(self, user: str) -> PageSettings:
        """The Page a reply to ``user`` goes out through: the one they wrote to (the only
        one, when there is one); ``PermanentSendError`` when it is not known."""
        assert self.ctx is not None
        if user in self.cache and self.cache[user][0] in self.accounts:
            return self.accounts[self.cache[user][0]]
        channel = self.channel

        def find(conn: sa.Connection) -> Any:
            return conn.execute(
                sa.select(peer_t.c.page_id, peer_t.c.name).where(
                    peer_t.c.channel == channel, peer_t.c.user_id == user
                )
            ).first()

        row = await self.ctx.transaction(find, write=False)
        if row is not None and row.page_id in self.accounts:
            self._remember(user, row.page_id, row.name)
            return self.accounts[row.page_id]
        if len(self.accounts) == 1:
            return next(iter(self.accounts.values()))
        raise PermanentSendError(
            f"which of the {len(self.accounts)} {self.channel} accounts this person wrote to is "
            "not known (they have not written since it was configured)"
        )

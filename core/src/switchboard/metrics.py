"""``/metrics`` in the Prometheus text format."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from switchboard.store import call_t, interaction_t

if TYPE_CHECKING:
    from switchboard.core import Switchboard
    from switchboard.webhooks import Webhooks


class SwitchboardCollector(Collector):
    """Figures read at scrape time: outbox depth, channel states, calls, events."""

    def __init__(self, core: Switchboard, webhooks: Webhooks) -> None:
        self.core = core
        self.webhooks = webhooks

    def collect(self) -> Iterator[Metric]:
        sb = self.core
        try:
            yield from self._from_store()
            up = 1.0
        except Exception:  # the figures that do not need the store still go out
            up = 0.0
        yield GaugeMetricFamily(
            "switchboard_store_up", "1 when the store answered this scrape.", value=up
        )
        states = GaugeMetricFamily(
            "switchboard_channel_state",
            "1 for the state each channel is in.",
            labels=["channel", "state"],
        )
        from switchboard.channels import ChannelState

        for name, handle in sb.channels.items():
            for state in ChannelState:
                states.add_metric([name, state.value], 1.0 if handle.state is state else 0.0)
        yield states
        from switchboard.supervisor import LoopState

        loops = GaugeMetricFamily(
            "switchboard_loop_state",
            "1 for the state each background loop is in (outbox, events, webhooks).",
            labels=["loop", "state"],
        )
        restarts = CounterMetricFamily(
            "switchboard_loop_restarts", "Restarts of each background loop.", labels=["loop"]
        )
        for name, loop in sb.loops.loops.items():
            for loop_state in LoopState:
                loops.add_metric([name, loop_state.value], 1.0 if loop.state is loop_state else 0.0)
            restarts.add_metric([name], float(loop.restarts))
        yield loops
        yield restarts
        events = CounterMetricFamily(
            "switchboard_events", "Events delivered to the stream.", labels=["type"]
        )
        for kind, count in sorted(sb.events.counts.items()):
            events.add_metric([kind], float(count))
        yield events
        yield GaugeMetricFamily(
            "switchboard_event_subscribers", "Connected event streams.", value=sb.events.subscribers
        )
        hooks = CounterMetricFamily(
            "switchboard_webhook_deliveries",
            "Webhook deliveries by outcome.",
            labels=["webhook", "outcome"],
        )
        for hook in self.webhooks.hooks:
            hooks.add_metric([hook.s.name, "delivered"], float(hook.delivered))
            hooks.add_metric([hook.s.name, "failed"], float(hook.failed))
        yield hooks
        lag = GaugeMetricFamily(
            "switchboard_consumer_lag",
            "Events written after the last one each event consumer handled (webhooks by "
            "name, plugins' as consumer:NAME).",
            labels=["consumer"],
        )
        handled = CounterMetricFamily(
            "switchboard_consumer_events",
            "Events each consumer handled, by outcome.",
            labels=["consumer", "outcome"],
        )
        for name, consumer in sorted(sb.consumers.all.items()):
            lag.add_metric([name], float(consumer[1].lag()))
            handled.add_metric([name, "delivered"], float(consumer[1].delivered))
            handled.add_metric([name, "failed"], float(consumer[1].failed))
        yield lag
        yield handled

    def _from_store(self) -> Iterator[Metric]:
        sb = self.core
        depth = sb.outbox.depth()
        calls = GaugeMetricFamily("switchboard_calls", "Call records by state.", labels=["state"])
        with sb.store.read() as conn:
            rows = conn.execute(
                sa.select(interaction_t.c.status, sa.func.count())
                .select_from(
                    call_t.join(interaction_t, interaction_t.c.id == call_t.c.interaction_id)
                )
                .group_by(interaction_t.c.status)
            ).all()
        for status, count in rows:
            calls.add_metric([status], float(count))
        yield GaugeMetricFamily(
            "switchboard_outbox_depth", "Messages waiting to be sent.", value=depth
        )
        yield calls


def make_registry(core: Switchboard, webhooks: Webhooks) -> tuple[CollectorRegistry, Counter]:
    registry = CollectorRegistry()
    requests = Counter(
        "switchboard_http_requests",
        "HTTP requests.",
        ["method", "route", "status"],
        registry=registry,
    )
    registry.register(SwitchboardCollector(core, webhooks))
    return registry, requests

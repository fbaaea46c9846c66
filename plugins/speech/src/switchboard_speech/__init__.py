"""Speech analytics for Switchboard: every recording gets talk metrics, a transcript per
speaker, a score against the configured rules, and a place in the transcript search
(``GET /api/calls?q=``), on the company's own machine. See docs/speech.md.

It stands on the core's service API: its own tables and migration, an event consumer of
``call.recorded`` (so no recording is missed across restarts), ``sb.supervise`` for its
workers, ``sb.call_search`` for the search, and ``sb.publish`` for ``speech.analysed``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from typing import Any

import click
from fastapi import FastAPI

from switchboard import Switchboard, hookimpl
from switchboard_speech import tables
from switchboard_speech.scoring import Rule
from switchboard_speech.service import Speech, fts_query, prune_forever
from switchboard_speech.settings import SpeechSettings

__all__ = ["PLUGIN", "Rule", "Speech", "SpeechPlugin", "SpeechSettings", "fts_query"]


class SpeechPlugin:
    """The plugin's hooks; the entry point registers one instance of it (``PLUGIN``)."""

    plugin_name = "speech"

    def __init__(self) -> None:
        #: The service, once the core configured the plugin (None before).
        self.speech: Speech | None = None

    @hookimpl
    def register_settings(self, register: Callable[[type[Any]], None]) -> None:
        register(SpeechSettings)

    @hookimpl
    def register_migrations(self, register: Any) -> None:
        register(files("switchboard_speech") / "migrations", tables.metadata)

    @hookimpl
    def configure(self, switchboard: Switchboard) -> None:
        settings = switchboard.config.plugin_settings(self.plugin_name)
        if not isinstance(settings, SpeechSettings):
            return  # installed, not configured (settings with errors)
        self.speech = Speech(switchboard, settings)
        switchboard.call_search = self.speech
        if settings.enabled:
            switchboard.consumers.add("speech", self.speech.on_event, types={"call.recorded"})

    @hookimpl
    def startup(self, app: FastAPI) -> None:
        speech = self.speech
        if speech is None:
            return
        if speech.settings.enabled:
            speech.sb.supervise("speech:jobs", speech.run)
        speech.sb.supervise("speech:prune", lambda: prune_forever(speech), one_runner=True)

    @hookimpl
    def register_commands(self, group: click.Group) -> None:
        from switchboard_speech.commands import speech_commands

        group.add_command(speech_commands)


PLUGIN = SpeechPlugin()

"""Switchboard's amoCRM connector: calls, recordings, messages and emails in amoCRM, and
its contacts for screen pops. See docs/crm-amocrm.md."""

from __future__ import annotations

from typing import Any

from switchboard import Switchboard
from switchboard.crm import CrmPlugin
from switchboard_amocrm import tables
from switchboard_amocrm.connector import AmoConnector
from switchboard_amocrm.settings import AmoCrmSettings

__all__ = ["PLUGIN", "AmoConnector", "AmoCrmPlugin", "AmoCrmSettings"]


class AmoCrmPlugin(CrmPlugin):
    """The plugin's hooks (all :class:`switchboard.crm.CrmPlugin`'s); the entry point
    registers one instance of it (``PLUGIN``)."""

    plugin_name = "amocrm"
    settings_class = AmoCrmSettings
    package = "switchboard_amocrm"
    metadata = tables.metadata

    def make_connector(self, core: Switchboard, settings: Any) -> AmoConnector:
        return AmoConnector(core, settings)


PLUGIN = AmoCrmPlugin()

"""Switchboard's Odoo connector: calls, recordings, messages and emails in the partner's
chatter, and Odoo's partners for screen pops. See docs/crm-odoo.md."""

from __future__ import annotations

from typing import Any

from switchboard import Switchboard
from switchboard.crm import CrmPlugin
from switchboard_odoo import tables
from switchboard_odoo.connector import OdooConnector
from switchboard_odoo.settings import OdooSettings

__all__ = ["PLUGIN", "OdooConnector", "OdooPlugin", "OdooSettings"]


class OdooPlugin(CrmPlugin):
    """The plugin's hooks (all :class:`switchboard.crm.CrmPlugin`'s); the entry point
    registers one instance of it (``PLUGIN``)."""

    plugin_name = "odoo"
    settings_class = OdooSettings
    package = "switchboard_odoo"
    metadata = tables.metadata

    def make_connector(self, core: Switchboard, settings: Any) -> OdooConnector:
        return OdooConnector(core, settings)


PLUGIN = OdooPlugin()

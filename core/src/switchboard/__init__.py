"""Switchboard: a company's communication channels, connected to its CRM.

The public API for plugin authors is re-exported here; see ``docs/hooks.md``.
"""

from switchboard.address import Address, AddressBook, AddressError
from switchboard.auth import Principal
from switchboard.backoff import Backoff
from switchboard.channels import (
    CallHandler,
    CallSession,
    Channel,
    ChannelContext,
    InboundMessage,
    InvalidInbound,
    OutboundMessage,
    PermanentSendError,
    Receipt,
    Received,
    SendError,
    TransientSendError,
    VoiceChannel,
)
from switchboard.config import Config, ConfigError, CoreSettings, load_config
from switchboard.core import ChannelState, Switchboard
from switchboard.errors import Conflict, Forbidden, Invalid, NotFound, SwitchboardError
from switchboard.events import Event, to_json
from switchboard.files import new_file_path, safe_filename
from switchboard.models import (
    Agent,
    CallRecord,
    Contact,
    Direction,
    Disposition,
    EventType,
    Interaction,
    InteractionKind,
    InteractionStatus,
    IvrStep,
    Recording,
    Role,
)
from switchboard.plugins import hookimpl
from switchboard.tasks import Tasks
from switchboard.templates import Rendered, TemplateError

__version__ = "0.1.0"

__all__ = [
    "Address",
    "AddressBook",
    "AddressError",
    "Agent",
    "Backoff",
    "CallHandler",
    "CallRecord",
    "CallSession",
    "Channel",
    "ChannelContext",
    "ChannelState",
    "Config",
    "ConfigError",
    "Conflict",
    "Contact",
    "CoreSettings",
    "Direction",
    "Disposition",
    "Event",
    "EventType",
    "Forbidden",
    "InboundMessage",
    "Interaction",
    "InteractionKind",
    "InteractionStatus",
    "Invalid",
    "InvalidInbound",
    "IvrStep",
    "NotFound",
    "OutboundMessage",
    "PermanentSendError",
    "Principal",
    "Receipt",
    "Received",
    "Recording",
    "Rendered",
    "Role",
    "SendError",
    "Switchboard",
    "SwitchboardError",
    "Tasks",
    "TemplateError",
    "TransientSendError",
    "VoiceChannel",
    "hookimpl",
    "load_config",
    "new_file_path",
    "safe_filename",
    "to_json",
]

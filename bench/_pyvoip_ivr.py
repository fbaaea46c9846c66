"""A bare pyVoIP IVR: answer, play a prompt, read RFC 2833 digits, until the caller hangs up.

The baseline the SIP benchmark runs the same SIPp load against. Usage:
    python bench/_pyvoip_ivr.py SERVER PORT USER LOCAL_PORT RTP_LOW RTP_HIGH STATS_FILE
It writes {"answered", "digits", "peak"} to STATS_FILE every second.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyVoIP.VoIP import CallState, InvalidStateError, VoIPCall, VoIPPhone

server, port, user, local_port, low, high, stats_file = sys.argv[1:8]
# 8-bit unsigned 8 kHz, as pyVoIP's audio API wants: a 440 Hz prompt, 3 s
PROMPT = bytes(int(128 + 60 * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(24000))
lock = threading.Lock()
stats = {"answered": 0, "digits": 0, "active": 0, "peak": 0}


def answer(call: VoIPCall) -> None:
    try:
        call.answer()
    except InvalidStateError:
        return
    with lock:
        stats["answered"] += 1
        stats["active"] += 1
        stats["peak"] = max(stats["peak"], stats["active"])
    try:
        got = ""
        offset = 0
        while call.state == CallState.ANSWERED:
            call.write_audio(PROMPT[offset : offset + 160])
            offset = (offset + 160) % len(PROMPT)
            digit = call.get_dtmf()
            if digit:
                got += digit
            time.sleep(0.02)
        if "1" in got:
            with lock:
                stats["digits"] += 1
    finally:
        with lock:
            stats["active"] -= 1


phone = VoIPPhone(
    server,
    int(port),
    user,
    "unused",
    myIP="127.0.0.1",
    callCallback=answer,
    sipPort=int(local_port),
    rtpPortLow=int(low),
    rtpPortHigh=int(high),
)
phone.start()
try:
    while True:
        with open(stats_file, "w") as f, lock:
            json.dump(stats, f)
        time.sleep(1)
except KeyboardInterrupt:
    pass
finally:
    phone.stop()

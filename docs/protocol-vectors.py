#!/usr/bin/env python3
"""Computes the v2 message test vectors of docs/protocol.md §1.6 and
docs/protocol-vectors.json ("vectors_v2") independently of agentd: Python 3,
standard library only. Run it to print them as JSON:

    python3 docs/protocol-vectors.py

The part between the two marker lines is quoted verbatim in
docs/protocol.md §1.5 (protocol::vectors checks that it is).
"""
import hashlib
import hmac
import json
import os
import struct
import time

# --- v2 reference implementation ---
def field(text):
    data = text.encode("utf-8")
    return struct.pack(">I", len(data)) + data

def canonical_v2(operator, session, nonce, timestamp, body,
                 for_agent=None, for_host=None, scope=None):
    fields = ["agentd-message-v2", operator, session, nonce, str(timestamp), body,
              for_agent or "", for_host or ""]
    if scope is None:          # unscoped: one empty field
        fields.append("")
    else:                      # entry count, then each entry
        fields.append(str(len(scope)))
        for entry in scope:
            args = entry.get("args", {})
            fields += [entry["action"], str(len(args))]
            for name in sorted(args, key=lambda n: n.encode("utf-8")):
                fields += [name, args[name]]
    return b"".join(field(f) for f in fields)

def sign_v2(key_hex, operator, session, body, for_agent=None, for_host=None, scope=None):
    nonce, ts = os.urandom(16).hex(), int(time.time())
    c = canonical_v2(operator, session, nonce, ts, body, for_agent, for_host, scope)
    msg = {"v": 2, "operator": operator, "session": session, "nonce": nonce,
           "timestamp": ts, "body": body}
    for k, v in [("for_agent", for_agent), ("for_host", for_host), ("scope", scope)]:
        if v is not None:
            msg[k] = v
    msg["signature"] = hmac.new(bytes.fromhex(key_hex), c, hashlib.sha256).hexdigest()
    return json.dumps(msg)
# --- end of v2 reference implementation ---

VECTORS = [
    {
        "name": "v2 audience and scope",
        "key": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "operator": "alice",
        "session": "slack:C024BE91L",
        "nonce": "9b1de3f0a2c4e6f8",
        "timestamp": 1795000000,
        "body": "read patient 7's chart",
        "for_agent": "clinic-bot",
        "for_host": "ward-3.example",
        "scope": [{"action": "read_chart", "args": {"path": "/srv/charts/patient-7*"}}],
    },
    {
        "name": "v2 scope only, arguments signed in name order",
        "key": "6167656e74642d746573742d6b6579",
        "operator": "svc.mcp-1",
        "session": "dm:U0G9QF9C6",
        "nonce": "nonce_with-URL-safe_chars_0123456789",
        "timestamp": 1795000123,
        "body": "Rechnung schicken ✓",
        "for_agent": None,
        "for_host": None,
        "scope": [
            {"action": "send_email",
             "args": {"to": "billing@vendor.example", "subject": "Rechnung — *"}},
            {"action": "list_files"},
        ],
    },
    {
        "name": "v2 audience only, unscoped",
        "key": "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "operator": "o",
        "session": "s",
        "nonce": "0000000000000000",
        "timestamp": 0,
        "body": "",
        "for_agent": "a",
        "for_host": None,
        "scope": None,
    },
    {
        "name": "v2 host only, empty scope (no call allowed)",
        "key": "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "operator": "o",
        "session": "s",
        "nonce": "0000000000000000",
        "timestamp": 0,
        "body": "",
        "for_agent": None,
        "for_host": "h",
        "scope": [],
    },
]


def main():
    out = []
    for v in VECTORS:
        c = canonical_v2(v["operator"], v["session"], v["nonce"], v["timestamp"], v["body"],
                         v["for_agent"], v["for_host"], v["scope"])
        sig = hmac.new(bytes.fromhex(v["key"]), c, hashlib.sha256).hexdigest()
        out.append(dict(v, canonical_hex=c.hex(), signature=sig))
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()

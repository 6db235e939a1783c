"""Raw HTTP requests to agentd's MCP endpoint, for the gateway's bad-input
tests (run inside the agent, so agentd names the caller).

Usage: http_raw.py REQUESTS_JSON (UDS | HOST:PORT)
REQUESTS_JSON is a list of {"method", "path", "headers", "body", "no_active"}; prints one
line per request: {"status", "session", "ctype", "body"} (body parsed as
JSON when it is JSON, else the text). AGENTD_ACTIVE_MESSAGE, when set, is
sent as the x-agentd-active-message header (unless the request says
"no_active")."""
import http.client
import json
import os
import socket
import sys


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("agentd", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def main():
    reqs = json.loads(sys.argv[1])
    where = sys.argv[2]
    for r in reqs:
        if where.startswith("/"):
            conn = UnixConnection(where)
        else:
            host, port = where.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if os.environ.get("AGENTD_ACTIVE_MESSAGE") and not r.get("no_active"):
            headers["x-agentd-active-message"] = os.environ["AGENTD_ACTIVE_MESSAGE"]
        headers.update(r.get("headers", {}))
        try:
            conn.request(r.get("method", "POST"), r["path"], body=r.get("body", "").encode(), headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
            try:
                body = json.loads(text)
            except ValueError:
                body = text
            print(json.dumps({"status": resp.status, "session": resp.getheader("mcp-session-id"),
                              "ctype": resp.getheader("content-type"), "body": body}), flush=True)
        except OSError as e:
            print(json.dumps({"status": 0, "error": repr(e)}), flush=True)
        finally:
            conn.close()


main()

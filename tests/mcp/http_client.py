"""The official MCP Python SDK's Streamable HTTP client, for the MCP
gateway tests.

Usage: http_client.py STEPS_JSON URL MODE [UDS]
MODE is `legacy` (2025-11-25: initialize, Mcp-Session-Id) or `auto`
(server/discover first: 2026-07-28 when the server speaks it). With UDS the
connection goes to that Unix socket. AGENTD_ACTIVE_MESSAGE, when set, is
sent as the x-agentd-active-message header; AGENTD_TEST_CA, when set, is the
CA certificate an https URL is checked against. STEPS_JSON as in client.py;
prints {"tools": [...], "protocol": VERSION} first, then one line per step."""
import asyncio
import json
import os
import ssl
import sys

import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CreateMessageResult, TextContent


async def sampling(context, params):
    """The client's model, scripted: answers every sampling request."""
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text="model-says-hi"),
                               model="scripted", stop_reason="endTurn")


async def main():
    steps = json.loads(sys.argv[1])
    url, mode = sys.argv[2], sys.argv[3]
    uds = sys.argv[4] if len(sys.argv) > 4 else None
    headers = {}
    if os.environ.get("AGENTD_ACTIVE_MESSAGE"):
        headers["x-agentd-active-message"] = os.environ["AGENTD_ACTIVE_MESSAGE"]
    transport = httpx2.AsyncHTTPTransport(uds=uds) if uds else None
    verify = True
    if os.environ.get("AGENTD_TEST_CA"):
        verify = ssl.create_default_context(cafile=os.environ["AGENTD_TEST_CA"])
    http = httpx2.AsyncClient(transport=transport, headers=headers, verify=verify,
                              timeout=httpx2.Timeout(30, read=60))
    async with http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode,
                          sampling_callback=sampling) as c:
            tools = await c.list_tools()
            print(json.dumps({"tools": sorted(t.name for t in tools.tools),
                              "protocol": c._session.protocol_version}), flush=True)
            for tool, args in steps:
                try:
                    res = await asyncio.wait_for(c.call_tool(tool, args), 30)
                    text = " ".join(getattr(x, "text", "") for x in res.content)
                    print(json.dumps({"tool": tool, "is_error": bool(res.is_error), "text": text,
                                      "meta": res.meta}, default=str), flush=True)
                except Exception as e:  # the gateway's JSON-RPC errors land here
                    print(json.dumps({"tool": tool, "exception": repr(e)}), flush=True)


asyncio.run(main())

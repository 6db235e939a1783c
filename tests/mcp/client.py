"""The official MCP Python SDK as the client, for the MCP gateway tests.

Usage: client.py STEPS_JSON -- SERVER-CMD...
STEPS_JSON is a list of [tool, arguments] (`prompt:NAME` gets a prompt,
`resource:URI` reads a resource); prints one JSON object per line:
{"tools": [...]} first, then per step {"tool", "is_error", "text", "meta"}
or {"tool", "exception"}."""
import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CreateMessageResult, TextContent


async def sampling(context, params):
    """The client's model, scripted: answers every sampling request."""
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text="model-says-hi"),
                               model="scripted", stop_reason="endTurn")


async def main():
    steps = json.loads(sys.argv[1])
    cmd = sys.argv[sys.argv.index("--") + 1:]
    # The SDK starts servers with a minimal environment: the active message
    # must be passed on explicitly, as a runtime's MCP server config does.
    env = {}
    if os.environ.get("AGENTD_ACTIVE_MESSAGE"):
        env["AGENTD_ACTIVE_MESSAGE"] = os.environ["AGENTD_ACTIVE_MESSAGE"]
    params = StdioServerParameters(command=cmd[0], args=cmd[1:], env=env)
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w, sampling_callback=sampling) as s:
            await s.initialize()
            tools = await s.list_tools()
            print(json.dumps({"tools": sorted(t.name for t in tools.tools)}), flush=True)
            for tool, args in steps:
                try:
                    if tool.startswith("prompt:"):
                        res = await asyncio.wait_for(s.get_prompt(tool[7:], args or None), 30)
                        text = " ".join(getattr(m.content, "text", "") for m in res.messages)
                        print(json.dumps({"tool": tool, "is_error": False, "text": text}), flush=True)
                        continue
                    if tool.startswith("resource:"):
                        res = await asyncio.wait_for(s.read_resource(tool[9:]), 30)
                        text = " ".join(getattr(c, "text", "") for c in res.contents)
                        print(json.dumps({"tool": tool, "is_error": False, "text": text}), flush=True)
                        continue
                    res = await asyncio.wait_for(s.call_tool(tool, args), 30)
                    text = " ".join(getattr(c, "text", "") for c in res.content)
                    meta = res.meta if hasattr(res, "meta") else None
                    print(json.dumps({"tool": tool, "is_error": bool(res.is_error), "text": text,
                                      "meta": meta}, default=str), flush=True)
                except Exception as e:  # the gateway's JSON-RPC errors land here
                    print(json.dumps({"tool": tool, "exception": repr(e)}), flush=True)


asyncio.run(main())

"""The forward suite's client: the official `openai` and `anthropic` Python
SDKs, pointed at agentd's model socket (a Unix socket, through the SDKs'
own httpx transport), run the steps given as JSON in argv[1] and print one
JSON line per step: the text, the tool calls and the stop reason the SDK
parsed, or the SDK's error (type, status, message).

Each step: {"name", "api": "openai"|"responses"|"anthropic", "stream":
bool, "prompt": "agentd-script: {...}"}. Streams go through the SDKs' stream
helpers (`chat.completions.stream`, `messages.stream`, and for Responses
`responses.stream` when the step says "helper", else
`responses.create(stream=True)`), which check event order and indices while
accumulating.
"""
import json
import os
import shlex
import subprocess
import sys

import anthropic
import httpx2
import openai

# agentd's model socket, or (for the control run without agentd) the
# upstream's own URL.
SOCKET = os.environ.get("AGENTD_MODEL_SOCKET")
# The upstream's own URL (the control), or agentd's loopback TCP listener.
DIRECT = os.environ.get("AGENTD_MODEL_DIRECT") or os.environ.get("AGENTD_MODEL_URL")
# The key the agent holds: anything. agentd replaces it.
CLIENT_KEY = "client-side-placeholder"
HEADERS = {}
if os.environ.get("AGENTD_ACTIVE_MESSAGE"):
    HEADERS["x-agentd-active-message"] = os.environ["AGENTD_ACTIVE_MESSAGE"]

TOOLS_OPENAI = [
    {"type": "function", "function": {"name": "exec_command", "description": "Run a command",
     "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}},
]
TOOLS_RESPONSES = [
    {"type": "function", "name": "exec_command", "description": "Run a command",
     "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
]
TOOLS_ANTHROPIC = [
    {"name": "Bash", "description": "Run a command",
     "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}},
]


def transport():
    if DIRECT:
        return httpx2.Client(timeout=20.0)
    return httpx2.Client(transport=httpx2.HTTPTransport(uds=SOCKET), timeout=20.0)


def base(suffix):
    return (DIRECT or "http://agentd") + suffix


def run_openai(step):
    client = openai.OpenAI(api_key=CLIENT_KEY, base_url=base("/v1"), max_retries=0,
                           http_client=transport(), default_headers=HEADERS)
    args = dict(model="gpt-fwd", messages=[{"role": "user", "content": step["prompt"]}],
                tools=TOOLS_OPENAI)
    if step.get("stream"):
        with client.chat.completions.stream(**args, stream_options={"include_usage": True}) as s:
            events = [e.type for e in s]
            final = s.get_final_completion()
    else:
        events = []
        final = client.chat.completions.create(**args)
    choice = final.choices[0]
    return {
        "text": choice.message.content or "",
        "tool_calls": [{"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
                       for t in (choice.message.tool_calls or [])],
        "stop": choice.finish_reason,
        "events": events[:200],
    }


def run_responses(step):
    client = openai.OpenAI(api_key=CLIENT_KEY, base_url=base("/v1"), max_retries=0,
                           http_client=transport(), default_headers=HEADERS)
    args = dict(model="gpt-fwd", input=[{"role": "user", "content": step["prompt"]}],
                tools=TOOLS_RESPONSES)
    events = []
    if step.get("stream") and step.get("helper"):
        with client.responses.stream(**args) as s:
            events = [e.type for e in s]
            final = s.get_final_response()
    elif step.get("stream"):
        final = None
        seqs = []
        for e in client.responses.create(**args, stream=True):
            events.append(e.type)
            seqs.append(getattr(e, "sequence_number", None))
            if e.type == "response.completed":
                final = e.response
        if seqs != list(range(len(seqs))):
            raise RuntimeError(f"sequence numbers out of order: {seqs}")
        if final is None:
            raise RuntimeError(f"no response.completed: {events}")
    else:
        final = client.responses.create(**args)
    calls = [o for o in final.output if o.type == "function_call"]
    return {
        "text": final.output_text,
        "tool_calls": [{"id": c.call_id, "name": c.name, "arguments": c.arguments} for c in calls],
        "stop": final.status,
        "events": events[:200],
        "usage": [final.usage.input_tokens, final.usage.output_tokens] if final.usage else None,
    }


def run_anthropic(step):
    client = anthropic.Anthropic(api_key=CLIENT_KEY, base_url=base(""), max_retries=0,
                                 http_client=transport(), default_headers=HEADERS)
    args = dict(model="claude-fwd", max_tokens=1024, tools=TOOLS_ANTHROPIC,
                messages=[{"role": "user", "content": step["prompt"]}])
    if step.get("stream"):
        with client.messages.stream(**args) as s:
            events = [e.type for e in s]
            final = s.get_final_message()
    else:
        events = []
        final = client.messages.create(**args)
    return {
        "text": "".join(b.text for b in final.content if b.type == "text"),
        "tool_calls": [{"id": b.id, "name": b.name, "arguments": json.dumps(b.input)}
                       for b in final.content if b.type == "tool_use"],
        "stop": final.stop_reason,
        "events": events[:200],
    }


def run_command(cmd):
    """Runs a command as a tool runner would (no shell); its outcome."""
    try:
        p = subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=20)
        return {"cmd": cmd, "rc": p.returncode, "out": p.stdout[:2000], "err": p.stderr[:500]}
    except OSError as e:
        return {"cmd": cmd, "errno": e.errno, "error": str(e)}


def act(step, out):
    """The loop's tool runner: runs each command the model's answer asks for
    (`run`), and the step's `also_run` command regardless (a bypass attempt)."""
    if step.get("run"):
        ran = []
        for t in out.get("tool_calls", []):
            args = json.loads(t["arguments"])
            ran.append(run_command(args.get("cmd") or args.get("command") or ""))
        out["ran"] = ran
    if step.get("also_run"):
        out["also_ran"] = run_command(step["also_run"])


def main():
    for step in json.loads(sys.argv[1]):
        out = {"name": step["name"]}
        try:
            run = {"openai": run_openai, "responses": run_responses}.get(step["api"], run_anthropic)
            out.update(run(step))
            out["ok"] = True
            act(step, out)
        except (openai.APIError, anthropic.APIError) as e:
            out["ok"] = False
            out["error"] = {"type": type(e).__name__, "status": getattr(e, "status_code", None),
                            "message": str(e)[:2000]}
        except Exception as e:  # the SDK choked on what it received
            out["ok"] = False
            out["error"] = {"type": type(e).__name__, "status": None, "message": str(e)[:2000]}
        print(json.dumps(out), flush=True)


main()

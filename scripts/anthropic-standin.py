#!/usr/bin/env python3
"""A loopback stand-in for the Anthropic Messages API, scripted per test.

The real `claude` CLI talks to it through
`ANTHROPIC_BASE_URL=http://127.0.0.1:PORT ANTHROPIC_API_KEY=anything`.

Usage: anthropic-standin.py --script FILE [--port 0] [--host 127.0.0.1]
                            [--log-dir DIR] [--ready-file FILE]

Once listening it prints one line, `http://HOST:PORT`, to stdout (and writes
it atomically to --ready-file). SIGTERM or SIGINT stops it.

The script is JSON, re-read on every request so a test may rewrite it:

    {"conversations": [
        {"match": "task-alpha",
         "steps": [{"tool": "Write", "input": {"file_path": "a.txt", "content": "x"}},
                   {"say": "Running it", "tools": [["Bash", {"command": "echo hi > b.txt"}]]},
                   {"error": 429, "message": "slow down", "headers": {"retry-after": "1"}},
                   {"text": "All done", "delay_ms": 50, "hold": "/tmp/go"}],
         "then": {"text": "Done."}}],
     "default": {"steps": [{"text": "Hello"}]}}

A main request (one with a non-empty `tools` list) goes to the first
conversation whose `match` occurs in the text of its first user message,
else to `default` (else it gets "Done."). Each (conversation,
X-Claude-Code-Session-Id) pair has a cursor, so a resumed session carries on
where it stopped: every main request consumes the next step; once they are
used up, `then` (default {"text": "Done."}) is served every time. Requests
without tools (the CLI's title generation) get a short title, consume
nothing and cost nothing (zero tokens), so a run's cost is its steps'.

Steps:
  {"text": T}                      one text block, stop_reason end_turn
  {"tool": NAME, "input": {..}}    one tool_use block, stop_reason tool_use
  {"tools": [[NAME, {..}], ..]}    several tool_use blocks; with either, "say": T
                                   adds a text block before them
  {"error": STATUS, "type": T, "message": M}
                                   an HTTP error with the API's JSON body; the
                                   type defaults from the status (429, 529, ..)
  {"drop": "before"}               close the connection without answering
  {"drop": "mid"}                  start the stream, then cut it
Options on reply steps: "headers" (extra response headers), "usage"
(input_tokens, output_tokens, cache_read_input_tokens,
cache_creation_input_tokens), "delay_ms" (pause between SSE events),
"hold": PATH (after the first delta, wait until PATH exists; at most
"hold_timeout_ms", default 120000).

Every attempt consumes a step: script the CLI's retries of errors (or run it
with CLAUDE_CODE_MAX_RETRIES=0), and its non-streaming retry after a
"drop": "mid" (unless CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK=1).

With --log-dir every request is written, before it is answered, to
DIR/NNNN-KIND.json (KIND: main, side, count, other) with its seq, path,
method, headers, body, conversation, step and session.
"""
import argparse
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 429: "rate_limit_error", 500: "api_error",
               529: "overloaded_error"}
DEFAULT_THEN = {"text": "Done."}
SIDE_TITLE = "Stand-in session"
RUN_ID = secrets.token_hex(4)  # keeps ids unique across restarts of the server


class ScriptError(Exception):
    """The script file is unreadable or describes an impossible step."""


def write_atomically(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def first_user_text(messages):
    """The text of the first user message: its string, or its text blocks joined."""
    for message in messages or []:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "\n".join(block.get("text", "") for block in content or []
                             if isinstance(block, dict) and block.get("type") == "text")
    return ""


def step_kind(step):
    """Which of text/tool/tools/error/drop the step is; ScriptError if malformed."""
    kinds = [k for k in ("text", "tool", "tools", "error", "drop") if k in step] \
        if isinstance(step, dict) else []
    kind = kinds[0] if len(kinds) == 1 else None
    if kind == "tools":
        value = step["tools"]
        ok = isinstance(value, list) and value and all(
            isinstance(t, list) and len(t) == 2 and isinstance(t[1], dict) for t in value)
    elif kind == "tool":
        ok = isinstance(step.get("input", {}), dict)
    elif kind == "drop":
        ok = step["drop"] in ("before", "mid")
    elif kind == "error":
        ok = isinstance(step["error"], int)
    else:
        ok = kind == "text"
    if not ok:
        raise ScriptError("a step needs exactly one of text, tool (+ input {..}), tools"
                          " ([[NAME, {..}], ..]), error (a status) or drop (before|mid): "
                          + json.dumps(step))
    return kind


def side_text(body):
    """The answer to a request without tools: JSON if it asks for structured output."""
    wants_json = isinstance(body, dict) and \
        (body.get("output_config") or {}).get("format", {}).get("type") == "json_schema"
    return json.dumps({"title": SIDE_TITLE}) if wants_json else SIDE_TITLE


def split(text, n):
    """`text` in at most n consecutive pieces (at least one)."""
    size = max(1, -(-len(text) // n))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def sse_events(message):
    """The SSE events (name, data) that stream `message`, in order."""
    start = dict(message, content=[], stop_reason=None,
                 usage=dict(message["usage"], output_tokens=1))
    events = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            empty = dict(block, text="")
            deltas = [{"type": "text_delta", "text": p} for p in split(block["text"], 3)]
        else:
            empty = dict(block, input={})
            deltas = [{"type": "input_json_delta", "partial_json": p}
                      for p in split(json.dumps(block["input"]), 2)]
        events.append(("content_block_start",
                       {"type": "content_block_start", "index": index, "content_block": empty}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index,
                                            "delta": delta}) for delta in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": message["usage"]["output_tokens"]}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


class Standin:
    """Shared state: the script's path, the step cursors and the counters."""

    def __init__(self, script, log_dir):
        self.script = script
        self.log_dir = log_dir
        self.lock = threading.Lock()
        self.cursors = {}
        self.counters = {"seq": 0, "id": 0}

    def count(self, counter):
        with self.lock:
            self.counters[counter] += 1
            return self.counters[counter]

    def new_id(self, prefix):
        return f"{prefix}_{RUN_ID}{self.count('id'):04d}"

    def load_script(self):
        try:
            with open(self.script) as f:
                script = json.load(f)
        except (OSError, ValueError) as e:
            raise ScriptError(f"cannot read script {self.script}: {e}") from e
        conversations = script.get("conversations", []) if isinstance(script, dict) else None
        if not isinstance(conversations, list) or not all(
                isinstance(c, dict) and isinstance(c.get("match"), str) for c in conversations):
            raise ScriptError(f"script {self.script} must be an object whose 'conversations'"
                              " is a list of objects with a 'match' string")
        return script

    def route(self, body, session):
        """(conversation label, step label, step) for a main request."""
        script = self.load_script()
        text = first_user_text(body.get("messages"))
        matches = [(i, c) for i, c in enumerate(script.get("conversations", []))
                   if c["match"] in text]
        if matches:
            label, conv = matches[0]
        elif isinstance(script.get("default"), dict):
            label, conv = "default", script["default"]
        else:
            return None, None, DEFAULT_THEN
        steps = conv.get("steps", [])
        if not isinstance(steps, list):
            raise ScriptError(f"'steps' of conversation {label} is not a list")
        with self.lock:
            index = self.cursors.get((label, session), 0)
            step = steps[index] if index < len(steps) else conv.get("then", DEFAULT_THEN)
            step_kind(step)  # a malformed step is reported and not consumed
            self.cursors[(label, session)] = index + 1
        return label, index if index < len(steps) else "then", step

    def message(self, body, step):
        """The complete assistant message that answers `body` with a reply step."""
        content = []
        text = "Partial answer that never finishes" if "drop" in step \
            else step.get("text", step.get("say"))
        if text is not None:
            content.append({"type": "text", "text": text})
        tools = step.get("tools", [])
        if "tool" in step:
            tools = [[step["tool"], step.get("input", {})]]
        content += [{"type": "tool_use", "id": self.new_id("toolu"), "name": name, "input": args}
                    for name, args in tools]
        usage = {"input_tokens": 100, "output_tokens": 20,
                 "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
        usage.update(step.get("usage", {}))
        return {"id": self.new_id("msg"), "type": "message", "role": "assistant",
                "model": body.get("model", "claude-standin"), "content": content,
                "stop_reason": "tool_use" if tools else "end_turn", "stop_sequence": None,
                "usage": usage}

    def log(self, seq, kind, record):
        if self.log_dir:
            write_atomically(os.path.join(self.log_dir, f"{seq:04d}-{kind}.json"),
                             json.dumps(record, indent=2))


class Handler(BaseHTTPRequestHandler):
    server_version = "anthropic-standin"

    def log_message(self, fmt, *args):
        pass  # one line per request is printed by note() instead

    def note(self, kind, conv=None, step=None, extra=""):
        print(f"[standin] {self.command} {self.path} {kind} conversation={conv}"
              f" step={step}{extra}", file=sys.stderr, flush=True)

    def send_json(self, status, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error_body(self, status, error_type, message, headers=None):
        error = {"type": error_type, "message": message}
        self.send_json(status, {"type": "error", "error": error}, headers)

    def record(self, kind, body=None, conv=None, step=None, problem=None):
        """Log the request (file and stderr line) before it is answered."""
        standin = self.server.standin
        seq = standin.count("seq")
        standin.log(seq, kind, {
            "seq": seq, "path": self.path, "method": self.command,
            "headers": dict(self.headers.items()), "body": body, "conversation": conv,
            "step": step, "session": self.headers.get("x-claude-code-session-id")})
        self.note(kind, conv, step, f" error={problem!r}" if problem else "")

    def do_HEAD(self):
        self.record("other")
        self.send_json(200, {})

    do_GET = do_HEAD

    def do_POST(self):
        standin = self.server.standin
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        if path.endswith("/count_tokens"):
            kind = "count"
        elif path.endswith("/v1/messages"):
            kind = "main" if isinstance(body, dict) and body.get("tools") else "side"
        else:
            kind = "other"
        conv, step_label, step, problem = None, None, None, None
        if kind == "main":
            try:
                conv, step_label, step = standin.route(
                    body, self.headers.get("x-claude-code-session-id"))
            except ScriptError as e:
                problem = str(e)
        self.record(kind, body, conv, step_label, problem)
        try:
            if problem:
                self.send_error_body(500, "api_error", f"anthropic-standin: {problem}")
            elif kind == "count":
                self.send_json(200, {"input_tokens": 42})
            elif kind == "other":
                self.send_error_body(404, "not_found_error", f"no such endpoint: {path}")
            elif kind == "side":
                # Free, so that what a scripted run costs depends on its
                # steps alone (the CLI does not always ask for a title).
                free = {"input_tokens": 0, "output_tokens": 0}
                self.reply(body if isinstance(body, dict) else {},
                           {"text": side_text(body), "usage": free})
            else:
                self.reply(body, step)
        except ConnectionError:  # broken pipe, reset: the client hung up mid-answer
            self.note(kind, conv, step_label, " (client went away)")

    def reply(self, body, step):
        kind = step_kind(step)
        if kind == "error":
            status = int(step["error"])
            self.send_error_body(status, step.get("type", ERROR_TYPES.get(status, "api_error")),
                                 step.get("message", f"stand-in error {status}"),
                                 step.get("headers"))
            return
        if kind == "drop" and (step["drop"] == "before" or not body.get("stream")):
            self.cut()  # a non-streaming answer has no middle to cut in
            return
        message = self.server.standin.message(body, step)
        if not body.get("stream"):  # the CLI's fallback after a broken stream
            self.send_json(200, message, step.get("headers"))
            return
        events = sse_events(message)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        for name, value in step.get("headers", {}).items():
            self.send_header(name, str(value))
        self.end_headers()
        first_delta = [name for name, _ in events].index("content_block_delta")
        delay = step.get("delay_ms", 0) / 1000
        for i, (name, data) in enumerate(events):
            if i and delay:
                time.sleep(delay)
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
            if i == first_delta:
                if kind == "drop":
                    self.cut()
                    return
                if step.get("hold"):
                    self.hold(step["hold"], step.get("hold_timeout_ms", 120000))

    def hold(self, path, timeout_ms):
        deadline = time.monotonic() + timeout_ms / 1000
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)

    def cut(self):
        """Close the socket abruptly, whatever has been sent so far."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.connection.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", required=True, help="JSON script, re-read on every request")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--log-dir", help="write every request there as NNNN-KIND.json")
    parser.add_argument("--ready-file", help="write the URL there once listening")
    args = parser.parse_args()
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.standin = Standin(args.script, args.log_dir)
    url = f"http://{args.host}:{server.server_address[1]}"

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(url, flush=True)
    if args.ready_file:
        write_atomically(args.ready_file, url + "\n")
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()

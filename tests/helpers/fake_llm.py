"""A small OpenAI-compatible chat server on 127.0.0.1 for the descriptor-generation tests.

Replies are scripted per class name: a queue of actions, each ("reply", text) or ("http", status);
when a class's queue is empty it gets a well-formed reply of the n descriptors asked for.
Every request's class name is recorded.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeLLM:
    def __init__(self, delay: float = 0.0):
        self.script: dict[str, list[tuple[str, object]]] = {}
        self.requests: list[str] = []
        self.delay = delay
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = next(m["content"] for m in body["messages"] if m["role"] == "user")
                # The paper's prompts ("...for action: {category}Provide ... {num_captions} steps in
                # total") or a template of the tests' own ('..."{class_name}"... exactly {n} ...').
                paper = re.search(r"for action: (.*?)Provide .*? (\d+) (?:descriptors|steps) in total", user)
                if paper:
                    name, n = paper.group(1), int(paper.group(2))
                else:
                    name = re.search(r'"([^"]+)"', user).group(1)
                    n = int(re.search(r"exactly (\d+) ", user).group(1))
                fake.requests.append(name)
                if fake.delay:
                    time.sleep(fake.delay)
                queue = fake.script.get(name) or []
                action, arg = queue.pop(0) if queue else ("reply", repr([f"{name} part {k}" for k in range(n)]))
                if action == "http":
                    self.send_response(arg)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(json.dumps({"error": {"message": "scripted failure"}}).encode())
                    return
                payload = {
                    "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": arg}}],
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

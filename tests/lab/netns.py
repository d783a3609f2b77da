"""Run this machine's Python inside a lab host's network namespace.

Lab hosts have no network access to install clients into; the machine's venv has httpx and the
official openai client. Entering only the network namespace of a lab container (`nsenter -n`)
makes the traffic come from that host's address, through its firewall, as a client there would.
"""

from __future__ import annotations

import json
import subprocess
import sys


def container_pid(container: str) -> int:
    out = subprocess.run(
        ["podman", "inspect", "-f", "{{.State.Pid}}", container], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def run_in_netns(container: str, code: str, payload: object = None, timeout: int = 300) -> object:
    """Run `code` (which reads JSON from stdin and prints JSON) in the container's netns."""
    proc = subprocess.run(
        ["nsenter", "-t", str(container_pid(container)), "-n", sys.executable, "-c", code],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"probe in {container} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


# The official openai client, as an application would use it, verified against a CA bundle.
OPENAI_COMPLETION = r"""
import json, sys, httpx, openai
args = json.load(sys.stdin)
client = openai.OpenAI(base_url=args["url"] + "/v1", api_key=args["key"],
                       http_client=httpx.Client(verify=args["ca"], timeout=60))
reply = client.chat.completions.create(model="lab", max_tokens=8,
                                       messages=[{"role": "user", "content": "Say hello."}])
print(json.dumps({"content": reply.choices[0].message.content, "tokens": reply.usage.completion_tokens}))
"""


def openai_completion(container: str, url: str, key: str, ca: str) -> dict:
    """A chat completion through `url` from inside `container`'s network namespace."""
    return run_in_netns(container, OPENAI_COMPLETION, {"url": url, "key": key, "ca": ca})

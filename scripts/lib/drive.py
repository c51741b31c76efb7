"""Sends COUNT requests on one connection and reads each answer whole; exits non-zero on any
status but 200. Usage: drive.py PORT METHOD PATH HEADERS-JSON COUNT [stream]"""
import http.client, json, sys

port, method, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
hdr, n = json.loads(sys.argv[4] or "{}"), int(sys.argv[5])
stream = len(sys.argv) > 6 and sys.argv[6] == "stream"
import os
prompt = "hi"
# DRIVE_PROMPT_BYTES=N: a benign prompt of N bytes instead of "hi".
size = int(os.environ.get("DRIVE_PROMPT_BYTES", "0"))
if size:
    sentence = "Could you summarise the main arguments of the essay below, and say which of them you find convincing and why? Keep it short and friendly. "
    prompt = (sentence * (size // len(sentence) + 1))[:size]
req = {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": prompt}]}
if path.endswith("/responses"):
    req = {"model": "llama-3.1-8b", "input": "hi"}
if stream:
    req["stream"] = True
body = json.dumps(req)
c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
for _ in range(n):
    c.request(method, path, body if method == "POST" else None, {"content-type": "application/json", **hdr})
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        sys.exit(f"{method} {path}: status {r.status}: {data[:300]!r}")
    if stream and b"[DONE]" not in data:
        sys.exit(f"{method} {path}: the stream did not end with [DONE]")

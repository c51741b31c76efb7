"""A small inference engine for the speed scripts, at 127.0.0.1:11434 (or the port given).

Answers every POST with one chat completion, or, when the request body has "stream": true, with a
stream of STREAM_CHUNKS content events, a finish event with usage and [DONE], each event in its
own HTTP chunk (so every host reads the same events one by one, whatever the timing). Reads
content-length and chunked request bodies; keeps connections open.
"""
import asyncio, json, os, sys

STREAM_CHUNKS = 100
# ENGINE_STREAM_GAP_MS: a pause before each streamed event after the first, so a component
# always waits for the next one (what a real engine's tokens do) and every run reads the stream
# the same way; 0 sends the stream in one write.
GAP_S = float(os.environ.get("ENGINE_STREAM_GAP_MS", "0")) / 1000
port = int(sys.argv[1]) if len(sys.argv) > 1 else 11434
body = json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "answer"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}).encode()
whole = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)

def chunk(event):
    data = b"data: " + event + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)

def ev(delta, finish=None, usage=None):
    e = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        e["usage"] = usage
    return json.dumps(e, separators=(",", ":")).encode()

events = [ev({"role": "assistant", "content": ""})]
events += [ev({"content": " word%d" % i}) for i in range(STREAM_CHUNKS)]
events += [ev({}, "stop", {"prompt_tokens": 5, "completion_tokens": STREAM_CHUNKS, "total_tokens": 5 + STREAM_CHUNKS})]
stream_head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
stream_parts = [chunk(e) for e in events] + [chunk(b"[DONE]") + b"0\r\n\r\n"]

async def handle(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            lines = [l.lower() for l in head.split(b"\r\n")]
            data = b""
            if any(l.startswith(b"transfer-encoding:") and b"chunked" in l for l in lines):
                while True:
                    size = int((await r.readuntil(b"\r\n")).strip(), 16)
                    data += (await r.readexactly(size + 2))[:size]
                    if size == 0:
                        break
            else:
                for l in lines:
                    if l.startswith(b"content-length:"):
                        data = await r.readexactly(int(l.split(b":")[1]))
            stream = False
            try:
                stream = json.loads(data or b"{}").get("stream") is True
            except ValueError:
                pass
            if not stream:
                w.write(whole)
            elif GAP_S == 0:
                w.write(stream_head + b"".join(stream_parts))
            else:
                w.write(stream_head + stream_parts[0])
                for part in stream_parts[1:]:
                    await w.drain()
                    await asyncio.sleep(GAP_S)
                    w.write(part)
            await w.drain()
    except Exception:
        w.close()

async def main():
    async with await asyncio.start_server(handle, "127.0.0.1", port) as s:
        await s.serve_forever()

asyncio.run(main())

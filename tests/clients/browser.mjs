// A page on another 127.0.0.1 origin calls Meridian with fetch, streams a chat completion and
// renders it, in headless Chromium (Debian's, driven by playwright-core). The same page served
// from an origin the browser key does not allow must be refused.
// Run by tests/e2e_clients.rs with MERIDIAN_URL, BROWSER_KEY, PAGE_PORT (allowed origin) and
// OTHER_PORT (not allowed). The upstream holds the stream after its first chunk until this
// script calls RELEASE_URL.
import http from "node:http";
import { chromium } from "playwright-core";

const { MERIDIAN_URL, BROWSER_KEY, PAGE_PORT, OTHER_PORT, RELEASE_URL } = process.env;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

function check(name, cond, detail = "") {
  if (!cond) {
    console.error(`FAIL browser ${name}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    process.exit(1);
  }
  console.log(`ok   browser ${name}`);
}

const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>Meridian chat</title></head>
<body>
<p id="out"></p><p id="status">idle</p><p id="provider"></p>
<script>
const MERIDIAN = ${JSON.stringify(MERIDIAN_URL)}, KEY = ${JSON.stringify(BROWSER_KEY)};
async function run() {
  const out = document.getElementById("out"), status = document.getElementById("status");
  try {
    const r = await fetch(MERIDIAN + "/v1/chat/completions", {
      method: "POST",
      headers: { "authorization": "Bearer " + KEY, "content-type": "application/json" },
      body: JSON.stringify({ model: "chat-model", stream: true, messages: [{ role: "user", content: "Say hello" }] }),
    });
    document.getElementById("provider").textContent = r.headers.get("x-meridian-provider") || "";
    if (!r.ok) { status.textContent = "error: " + r.status + " " + await r.text(); return; }
    status.textContent = "streaming";
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\\n\\n")) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of event.split("\\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") { status.textContent = "done"; continue; }
          out.textContent += JSON.parse(data).choices?.[0]?.delta?.content ?? "";
        }
      }
    }
    if (status.textContent !== "done") status.textContent = "error: the stream ended without [DONE]";
  } catch (e) {
    status.textContent = "error: " + e;
  }
}
run();
</script>
</body></html>`;

const servers = [PAGE_PORT, OTHER_PORT].map((port) => {
  const s = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(page);
  });
  s.listen(Number(port), "127.0.0.1");
  return s;
});

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  timeout: 60000, // playwright gives it a fresh, empty profile

});
try {
  const ctx = await browser.newContext();
  const tab = await ctx.newPage();
  await tab.goto(`http://127.0.0.1:${PAGE_PORT}/`);
  // Text is on the page while the stream is still open: it is rendered as it arrives.
  await tab.waitForFunction(
    () => document.getElementById("out").textContent.length > 0 &&
      document.getElementById("status").textContent === "streaming",
    null,
    { timeout: 30000, polling: 10 },
  );
  const partial = await tab.textContent("#out");
  check("renders text before the stream ends", partial === "Hello", partial);
  await fetch(RELEASE_URL, { method: "POST", body: "{}" });
  await tab.waitForFunction(() => document.getElementById("status").textContent !== "streaming", null, { timeout: 30000 });
  check("stream completes", (await tab.textContent("#status")) === "done", await tab.textContent("#status"));
  check("streamed text rendered", (await tab.textContent("#out")) === "Hello from a stream", await tab.textContent("#out"));
  check("audit header readable by the script", (await tab.textContent("#provider")) === "alpha", await tab.textContent("#provider"));

  const other = await ctx.newPage();
  await other.goto(`http://127.0.0.1:${OTHER_PORT}/`);
  await other.waitForFunction(() => document.getElementById("status").textContent.startsWith("error"), null, { timeout: 30000 });
  const refused = await other.textContent("#status");
  check("disallowed origin is refused by the browser (CORS)", refused.includes("Failed to fetch"), refused);
  check("nothing rendered for the disallowed origin", (await other.textContent("#out")) === "");
} finally {
  await browser.close();
  servers.forEach((s) => s.close());
}

// The refusal is Meridian's, not only the browser's: the same request with that Origin gets 403.
const r = await fetch(`${MERIDIAN_URL}/v1/chat/completions`, {
  method: "POST",
  headers: { authorization: `Bearer ${BROWSER_KEY}`, "content-type": "application/json", origin: `http://127.0.0.1:${OTHER_PORT}` },
  body: JSON.stringify({ model: "chat-model", messages: [{ role: "user", content: "x" }] }),
});
const body = await r.json();
check("server refuses the key from another origin with 403", r.status === 403 && body.error.code === "origin_not_allowed", body);
const pre = await fetch(`${MERIDIAN_URL}/v1/chat/completions`, {
  method: "OPTIONS",
  headers: { origin: `http://127.0.0.1:${OTHER_PORT}`, "access-control-request-method": "POST" },
});
check("preflight from another origin is refused", pre.status === 403 && !pre.headers.get("access-control-allow-origin"));
const ok = await fetch(`${MERIDIAN_URL}/v1/chat/completions`, {
  method: "OPTIONS",
  headers: { origin: `http://127.0.0.1:${PAGE_PORT}`, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
});
check("preflight from the allowed origin", ok.status === 204 && ok.headers.get("access-control-allow-origin") === `http://127.0.0.1:${PAGE_PORT}`);
console.log("browser: all passed");

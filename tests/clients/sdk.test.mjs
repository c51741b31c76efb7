// Meridian called with the official openai npm package, as a server-side JavaScript app would.
// Run by tests/e2e_clients.rs: MERIDIAN_URL is the router, MERIDIAN_KEY a tenant's key.
import OpenAI from "openai";

const baseURL = `${process.env.MERIDIAN_URL}/v1`;
const client = new OpenAI({ baseURL, apiKey: process.env.MERIDIAN_KEY, maxRetries: 0, timeout: 30000 });
const messages = [{ role: "user", content: "Say hello" }];

function check(name, cond, detail = "") {
  if (!cond) {
    console.error(`FAIL node ${name}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    process.exit(1);
  }
  console.log(`ok   node ${name}`);
}

// Chat, non-stream, with the raw response for Meridian's audit headers.
const { data: chat, response } = await client.chat.completions
  .create({ model: "chat-model", messages })
  .withResponse();
check("chat", chat.choices[0].message.content === "Hello from the mock", chat);
check("chat audit headers", response.headers.get("x-meridian-provider") === "alpha");
check("chat usage", chat.usage?.total_tokens === 30, chat.usage);

// Chat, stream.
const stream = await client.chat.completions.create({ model: "chat-model", messages, stream: true });
let text = "";
for await (const c of stream) text += c.choices[0]?.delta?.content ?? "";
check("chat stream", text === "Hello from a stream", text);

// Embeddings: the SDK asks for base64 by default and decodes it; floats on request.
let emb = await client.embeddings.create({ model: "embed-model", input: "hello" });
check("embeddings (base64)", JSON.stringify(emb.data[0].embedding) === "[0.5,-0.25,1]", emb.data[0].embedding);
emb = await client.embeddings.create({ model: "embed-model", input: "hello", encoding_format: "float" });
check("embeddings (float)", JSON.stringify(emb.data[0].embedding) === "[0.5,-0.25,1]", emb.data[0].embedding);

// Models list.
const ids = [];
for await (const m of client.models.list()) ids.push(m.id);
ids.sort();
check("models", JSON.stringify(ids) === '["chat-model","embed-model"]', ids);

// Errors: the SDK's own error classes, carrying Meridian's message.
try {
  await client.chat.completions.create({ model: "chat-modle", messages });
  check("unknown model throws", false, "no error");
} catch (e) {
  check("unknown model is NotFoundError (404)", e instanceof OpenAI.NotFoundError && e.status === 404, String(e));
  check("unknown model message", e.message.includes("Did you mean `chat-model`?"), e.message);
  check("unknown model code", e.code === "model_not_found", e.code);
}
// A key that matches no tenant is served as anonymous (the policy allows anonymous callers), and
// anonymous callers may not spend the operator's provider key.
const bad = new OpenAI({ baseURL, apiKey: "sk-not-a-tenant", maxRetries: 0 });
try {
  await bad.chat.completions.create({ model: "chat-model", messages });
  check("unknown key throws", false, "no error");
} catch (e) {
  check("unknown key is anonymous: PermissionDeniedError (403)", e instanceof OpenAI.PermissionDeniedError && e.status === 403, String(e));
  check("anonymous tenant reported", e.headers?.get?.("x-meridian-tenant") === "anonymous" || e.headers?.["x-meridian-tenant"] === "anonymous", String(e.headers));
  check("unknown key message", e.message.includes("may not spend"), e.message);
}
console.log("node: all passed");

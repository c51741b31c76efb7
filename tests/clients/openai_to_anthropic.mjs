// The official openai npm package against Meridian routing to an Anthropic provider: the app keeps
// its OpenAI code. Run by tests/e2e_wires.rs; MERIDIAN_URL is the router.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: `${process.env.MERIDIAN_URL}/v1`, apiKey: "sk-app", maxRetries: 0, timeout: 30000 });

function check(name, cond, detail = "") {
  if (!cond) {
    console.error(`FAIL node ${name}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    process.exit(1);
  }
  console.log(`ok   node ${name}`);
}

const chat = await client.chat.completions.create({
  model: "chat-model",
  messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Say hello" }],
});
check("chat", chat.choices[0].message.content === "Hello from Claude", chat);
check("chat usage", chat.usage?.completion_tokens === 4, chat.usage);

const stream = await client.chat.completions.create({
  model: "chat-model", messages: [{ role: "user", content: "Say hello" }], stream: true,
  stream_options: { include_usage: true },
});
let text = "";
let usage = null;
for await (const c of stream) {
  text += c.choices[0]?.delta?.content ?? "";
  if (c.usage) usage = c.usage;
}
check("chat stream", text === "Hello from a Claude stream", text);
check("chat stream usage", usage?.completion_tokens === 6, usage);

try {
  await client.chat.completions.create({ model: "chat-model", messages: [{ role: "user", content: "x" }], logprobs: true });
  check("unsupported field refused", false, "no error");
} catch (e) {
  check("unsupported field refused", e instanceof OpenAI.BadRequestError && String(e.message).includes("logprobs"), String(e));
}
console.log("all ok");

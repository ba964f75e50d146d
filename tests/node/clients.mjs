// Node.js clients through `keyvault proxy`, the way a Node app uses them: the official
// Anthropic TypeScript SDK and axios, with a placeholder key the proxy replaces.
// usage: node clients.mjs PROXY_URL ROUNDS  -> prints {"sdk": n, "axios": n, "failed": n}
import Anthropic from "@anthropic-ai/sdk";
import axios from "axios";

const [baseURL, rounds] = [process.argv[2], Number(process.argv[3] ?? 5)];
const client = new Anthropic({ baseURL, apiKey: "unused-the-proxy-adds-the-key", maxRetries: 0 });
const result = { sdk: 0, axios: 0, failed: 0, errors: [] };

for (let round = 0; round < rounds; round += 1) {
  try {
    const message = await client.messages.create({
      model: "claude-test",
      max_tokens: 16,
      messages: [{ role: "user", content: "hello" }],
    });
    if (message.content[0].text === "ok") result.sdk += 1;
    else result.failed += 1;
  } catch (error) {
    result.failed += 1;
    result.errors.push(`sdk: ${error.status ?? error.name}`);
  }
  try {
    const response = await axios.get(`${baseURL}/v1/models`, {
      headers: { "x-api-key": "unused" },
      validateStatus: () => true,
    });
    if (response.status === 200) result.axios += 1;
    else {
      result.failed += 1;
      result.errors.push(`axios: ${response.status}`);
    }
  } catch (error) {
    result.failed += 1;
    result.errors.push(`axios: ${error.code ?? error.name}`);
  }
  await new Promise((resolve) => setTimeout(resolve, 50));
}
console.log(JSON.stringify(result));

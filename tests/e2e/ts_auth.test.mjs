// The official TypeScript SDK with an API key (`Authorization: Bearer slk_…`,
// passed in `requestInit.headers`) through a gateway with auth required.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const target = process.env.CARGO_TARGET_DIR ?? join(root, "target");
const sluiceBin = process.env.SLUICE_BIN ?? join(target, "debug", "sluice");
const fixtureBin = process.env.SLUICE_FIXTURE_BIN ?? join(target, "debug", "sluice-fixture");

let gateway, url, key;

before(async () => {
  const dir = mkdtempSync(join(tmpdir(), "sluice-ts-auth-"));
  const cfg = join(dir, "sluice.toml");
  writeFileSync(
    cfg,
    `[sessions]\nstore = "memory"\n[auth]\nmode = "required"\nrequired_scopes = ["mcp"]\n` +
      `[auth.api_keys]\npepper = "a-typescript-pepper-of-at-least-32-bytes"\n` +
      `[[servers]]\nname = "fx"\ncommand = "${fixtureBin}"\n`,
  );
  const out = execFileSync(sluiceBin, ["keys", "create", "--name", "ts-e2e", "--scopes", "mcp", "--config", cfg], {
    encoding: "utf8",
  });
  key = out.trim().split("\n").pop();
  assert.match(key, /^slk_/);
  gateway = spawn(sluiceBin, ["serve", "--config", cfg, "--listen", "127.0.0.1:0"], { stdio: ["ignore", "ignore", "pipe"] });
  url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("sluice did not start")), 90_000);
    createInterface({ input: gateway.stderr }).on("line", (line) => {
      if (line.startsWith("sluice listening on ")) {
        clearTimeout(timer);
        ok(line.slice("sluice listening on ".length).trim());
      }
    });
  });
});

after(() => {
  gateway?.kill("SIGTERM");
});

test("the SDK calls a tool with an API key", async () => {
  const client = new Client({ name: "sluice-ts-auth", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
  });
  await client.connect(transport);
  try {
    const r = await client.callTool({ name: "fx__echo", arguments: { text: "ts with a key" } });
    assert.equal(r.content[0].text, "ts with a key");
  } finally {
    await client.close();
  }
});

test("without the key the SDK is refused", async () => {
  const client = new Client({ name: "sluice-ts-auth", version: "1.0.0" });
  await assert.rejects(client.connect(new StreamableHTTPClientTransport(new URL(url))));
});

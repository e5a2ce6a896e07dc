// The official TypeScript SDK (@modelcontextprotocol/sdk 1.x) through Sluice,
// fronting server-everything over stdio and the repo's fixture over HTTP.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const target = process.env.CARGO_TARGET_DIR ?? join(root, "target");
const sluiceBin = process.env.SLUICE_BIN ?? join(target, "debug", "sluice");
const fixtureBin = process.env.SLUICE_FIXTURE_BIN ?? join(target, "debug", "sluice-fixture");
const everything = join(here, "node_modules", ".bin", "mcp-server-everything");

/** Spawns a process and resolves with the rest of the first line starting with `prefix`. */
function startAndWait(cmd, args, stream, prefix) {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd}: no "${prefix}" line`)), 90_000);
    const rl = createInterface({ input: child[stream] });
    rl.on("line", (line) => {
      if (line.startsWith(prefix)) {
        clearTimeout(timer);
        resolvePromise({ child, value: line.slice(prefix.length).trim() });
      }
    });
    child.on("exit", (code) => reject(new Error(`${cmd} exited with ${code}`)));
  });
}

let remote, gateway, url;

before(async () => {
  const r = await startAndWait(fixtureBin, ["--name", "remote", "http", "--listen", "127.0.0.1:0"], "stdout", "listening on ");
  remote = r.child;
  const dir = mkdtempSync(join(tmpdir(), "sluice-ts-"));
  const cfg = join(dir, "sluice.toml");
  writeFileSync(
    cfg,
    `[[servers]]\nname = "everything"\ncommand = "${everything}"\n\n[[servers]]\nname = "remote"\nurl = "${r.value}"\n`,
  );
  const g = await startAndWait(sluiceBin, ["serve", "--config", cfg, "--listen", "127.0.0.1:0"], "stderr", "sluice listening on ");
  gateway = g.child;
  url = g.value;
});

after(() => {
  gateway?.kill("SIGTERM");
  remote?.kill("SIGTERM");
});

async function connect(capabilities = {}) {
  const client = new Client({ name: "sluice-ts-e2e", version: "1.0.0" }, { capabilities });
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  return client;
}

test("lists and calls tools of both servers", async () => {
  const client = await connect();
  try {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    assert.ok(names.includes("everything__echo"), names.join(","));
    assert.ok(names.includes("remote__echo"));
    const a = await client.callTool({ name: "everything__echo", arguments: { message: "ts" } });
    assert.equal(a.content[0].text, "Echo: ts");
    const b = await client.callTool({ name: "remote__echo", arguments: { text: "ts over http" } });
    assert.equal(b.content[0].text, "ts over http");
  } finally {
    await client.close();
  }
});

test("reads a resource and gets a prompt", async () => {
  const client = await connect();
  try {
    const { resources } = await client.listResources();
    const uris = resources.map((r) => r.uri);
    assert.ok(uris.includes("test://static-text"));
    const r = await client.readResource({ uri: "test://static-text" });
    assert.ok(r.contents[0].text.length > 0);
    const other = uris.find((u) => !u.startsWith("test://"));
    assert.ok(other, "server-everything lists resources");
    assert.ok((await client.readResource({ uri: other })).contents.length > 0);
    const p = await client.getPrompt({ name: "everything__simple-prompt" });
    assert.ok(p.messages.length > 0);
  } finally {
    await client.close();
  }
});

test("receives progress", async () => {
  const client = await connect();
  try {
    const seen = [];
    const r = await client.callTool(
      { name: "everything__trigger-long-running-operation", arguments: { duration: 1, steps: 4 } },
      undefined,
      { onprogress: (p) => seen.push(p.progress) },
    );
    assert.ok(!r.isError);
    assert.deepEqual(seen, [1, 2, 3, 4]);
  } finally {
    await client.close();
  }
});

test("relays sampling to the client", async () => {
  const client = await connect({ sampling: {} });
  client.setRequestHandler(CreateMessageRequestSchema, async () => ({
    role: "assistant",
    content: { type: "text", text: "sampled in ts" },
    model: "m",
    stopReason: "endTurn",
  }));
  try {
    const r = await client.callTool({ name: "remote__test_sampling", arguments: { prompt: "hi" } });
    assert.ok(JSON.stringify(r.content).includes("sampled in ts"), JSON.stringify(r));
  } finally {
    await client.close();
  }
});

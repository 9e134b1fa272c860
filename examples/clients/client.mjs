// kvio serve from Node.js 20 with the built-in fetch: no packages.
//
//   node client.mjs URL STORE KEY [KEY...]
//   KVIO_TOKEN=...  the bearer token, if the server runs with --token-file
//
// Prints the store's version, the first key's value, a batch get of every key and a scan of
// up to 3 pairs from the first key, one "what key = value" line each. Keys and values are
// bytes (Buffers); this client takes them as UTF-8 text on the command line.

import { pathToFileURL } from "node:url";

const UNRESERVED = /[A-Za-z0-9\-._~]/;

/** Percent-encode every byte but the unreserved ones: any key is a valid path segment.
 * (A key that is exactly "." or "..", or has such a "/"-separated part, is a dot segment
 * that fetch's URL parser removes: get it with getMany instead.) */
export function pct(bytes) {
  let out = "";
  for (const b of bytes) {
    const c = String.fromCharCode(b);
    out += UNRESERVED.test(c) ? c : "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

export class KvioClient {
  constructor(url, store, token = process.env.KVIO_TOKEN) {
    this.base = `${url.replace(/\/+$/, "")}/v1/stores/${encodeURIComponent(store)}`;
    this.headers = token ? { Authorization: `Bearer ${token}` } : {};
  }

  async #fetch(path, init = {}) {
    const response = await fetch(this.base + path, { ...init, headers: { ...this.headers, ...init.headers } });
    if (!response.ok && response.status !== 404) {
      throw new Error(`HTTP ${response.status}: ${await response.text()}`);
    }
    return response;
  }

  /** The store's description: version, pairs, partitions, ... */
  async info() {
    return (await this.#fetch("")).json();
  }

  /** One value as a Buffer, or null when the key is absent. */
  async get(key) {
    const response = await this.#fetch(`/keys/${pct(Buffer.from(key))}`);
    return response.status === 404 ? null : Buffer.from(await response.arrayBuffer());
  }

  /** Many values from one version, in the order of the keys (null for absent ones). */
  async getMany(keys) {
    const body = JSON.stringify({ keys: keys.map((k) => Buffer.from(k).toString("base64")), encoding: "base64" });
    const response = await this.#fetch("/get", { method: "POST", body, headers: { "Content-Type": "application/json" } });
    const { values } = await response.json();
    return values.map((v) => (v === null ? null : Buffer.from(v, "base64")));
  }

  /** Pairs in key order from start on (async generator over the NDJSON stream). */
  async *scan({ start, stop, prefix, limit } = {}) {
    const query = new URLSearchParams({ encoding: "base64" }).toString()
      + (start !== undefined ? `&start=${pct(Buffer.from(start))}` : "")
      + (stop !== undefined ? `&stop=${pct(Buffer.from(stop))}` : "")
      + (prefix !== undefined ? `&prefix=${pct(Buffer.from(prefix))}` : "")
      + (limit !== undefined ? `&limit=${limit}` : "");
    const response = await this.#fetch(`/scan?${query}`);
    const decoder = new TextDecoder();
    let pending = "";
    for await (const chunk of response.body) {  // streamed: memory stays small
      pending += decoder.decode(chunk, { stream: true });
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines) {
        const pair = JSON.parse(line);
        if (pair.error) throw new Error(pair.error.message);
        yield [Buffer.from(pair.key, "base64"), Buffer.from(pair.value, "base64")];
      }
    }
  }
}

const text = (value) => (value === null ? "(absent)" : value.toString("utf8"));

async function main() {
  const [url, store, ...keys] = process.argv.slice(2);
  if (!keys.length) {
    console.error("usage: node client.mjs URL STORE KEY [KEY...]");
    process.exit(2);
  }
  const client = new KvioClient(url, store);
  const lines = [`version ${(await client.info()).version}`];
  lines.push(`get ${keys[0]} = ${text(await client.get(keys[0]))}`);
  const values = await client.getMany(keys);
  keys.forEach((key, i) => lines.push(`batch ${key} = ${text(values[i])}`));
  for await (const [key, value] of client.scan({ start: keys[0], limit: 3 })) {
    lines.push(`scan ${text(key)} = ${text(value)}`);
  }
  process.stdout.write(lines.join("\n") + "\n");
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {  // run, not imported
  main().catch((error) => {
    console.error(`error: ${error.message}`);
    process.exit(1);
  });
}

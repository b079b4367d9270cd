#!/usr/bin/env node
"use strict";
// Reference Node.js search over an index folder written by `python -m deploy index build`
// (the format: export/README.md, "Index folder"). Exact Hamming top-k, ties by insertion
// order: the same hits and distances as Python's exact search.
//
//   node search.js --index DIR --contract ART_DIR/encoder.json [-k 10] [--json] QUERY.png
//   node search.js --index DIR --code HEX [-k 10] [--json]
//   node search.js --check ART_DIR/golden.json [--data DATASET_DIR]
//
// --check validates this host against the export's golden vectors: every image's prepared
// input (sha256) and code, and the expected top-k over an index of the golden codes.
// Images that live in a dataset are checked only with --data (they are never copied).

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const { openEncoder, encodePng, toHex } = require("./encode");

const INDEX_FORMAT_VERSION = 1;
const VALID_BITS = [32, 64, 128, 256, 512, 1024];

function usage(message) {
  if (message) console.error(`error: ${message}`);
  console.error("usage: node search.js --index DIR (--contract encoder.json QUERY.png | --code HEX)");
  console.error("                      [-k K] [--json]");
  console.error("       node search.js --check golden.json [--data DATASET_DIR]");
  process.exit(2);
}

function parseArgs(argv) {
  const args = { k: 10, json: false, images: [] };
  const valued = ["--index", "--contract", "--model", "--code", "--check", "--data", "-k", "--k"];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (valued.includes(a)) {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      args[a.replace(/^-+/, "")] = argv[++i];
    } else if (a === "--json") {
      args.json = true;
    } else if (a === "-h" || a === "--help") {
      usage();
    } else if (a.startsWith("-")) {
      usage(`unknown option ${a}`);
    } else {
      args.images.push(a);
    }
  }
  args.k = Number(args.k);
  if (!Number.isInteger(args.k) || args.k < 1) usage(`-k must be an integer >= 1`);
  if (args.check) return args;
  if (!args.index) usage("--index is required");
  if (Boolean(args.code) === Boolean(args.contract) || (args.contract && args.images.length !== 1))
    usage("give --code HEX, or --contract encoder.json and one query image");
  return args;
}

const sha256 = (bytes) => crypto.createHash("sha256").update(bytes).digest("hex");

// ------------------------------------------------------------------ the index folder
// codes.npy: NPY 1.0/2.0, uint8, C order, shape (count, bits / 8); the sidecar records
// the sha256 of the code bytes (the data after the header), checked before any use.
function readNpyCodes(file, count, nBytes) {
  let buf;
  try {
    buf = fs.readFileSync(file);
  } catch (err) {
    throw new Error(`codes file ${file} is missing, truncated or corrupted (${err.code})`);
  }
  const magic = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY
  if (buf.length < 10 || !buf.subarray(0, 6).equals(magic))
    throw new Error(`codes file ${file} is missing, truncated or corrupted: not an .npy file`);
  const major = buf[6];
  if (major !== 1 && major !== 2)
    throw new Error(`codes file ${file}: unsupported .npy format version ${major}`);
  const lenBytes = major === 1 ? 2 : 4;
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = 8 + lenBytes + headerLen;
  const header = buf.subarray(8 + lenBytes, start).toString("latin1");
  const descr = /'descr':\s*'([^']*)'/.exec(header);
  const fortran = /'fortran_order':\s*(True|False)/.exec(header);
  const shape = /'shape':\s*\(\s*(\d+)\s*,\s*(\d+)\s*,?\s*\)/.exec(header);
  if (!descr || !fortran || !shape || !["|u1", "<u1", ">u1"].includes(descr[1]) ||
      Number(shape[1]) !== count || Number(shape[2]) !== nBytes ||
      (fortran[1] === "True" && count > 1))
    throw new Error(
      `codes file ${file} holds ${header.trim()}, expected uint8 (${count}, ${nBytes}) from the sidecar`,
    );
  const data = buf.subarray(start);
  if (data.length !== count * nBytes)
    throw new Error(
      `codes file ${file} is missing, truncated or corrupted: ${data.length} bytes of codes, ` +
        `expected ${count * nBytes}`,
    );
  return data;
}

function loadIndex(folder) {
  const sidecarPath = path.join(folder, "index.json");
  let meta;
  try {
    meta = JSON.parse(fs.readFileSync(sidecarPath, "utf8"));
  } catch (err) {
    throw new Error(
      err.code === "ENOENT"
        ? `no index at ${folder}: index.json is missing`
        : `index sidecar ${sidecarPath} is corrupted or truncated (${err.message})`,
    );
  }
  const bad = (what) => {
    throw new Error(`index sidecar ${sidecarPath} is corrupted: ${what}`);
  };
  if (meta.format_version !== INDEX_FORMAT_VERSION || meta.metric !== "hamming")
    bad(`format ${meta.format_version} / metric ${meta.metric}; this host reads format 1, hamming`);
  if (!VALID_BITS.includes(meta.bits)) bad(`bits must be one of ${VALID_BITS}`);
  if (!Number.isInteger(meta.count) || !Array.isArray(meta.ids) || meta.ids.length !== meta.count)
    bad("count and ids disagree");
  if (!Array.isArray(meta.metadata) || meta.metadata.length !== meta.count)
    bad("count and metadata disagree");
  if (new Set(meta.ids).size !== meta.ids.length) bad("duplicate ids");
  const codesPath = path.join(folder, "codes.npy");
  const codes = readNpyCodes(codesPath, meta.count, meta.bits / 8);
  if (sha256(codes) !== meta.codes_sha256)
    throw new Error(`codes file ${codesPath} is corrupted: its sha256 differs from the sidecar's`);
  return { bits: meta.bits, codesId: meta.fingerprint, ids: meta.ids, metadata: meta.metadata, codes };
}

// ------------------------------------------------------------------ exact top-k
const POPCOUNT = new Uint8Array(256).map((_, b) => {
  let n = 0;
  for (let v = b; v; v >>= 1) n += v & 1;
  return n;
});

// Positions and distances of the k nearest codes (all if k > count), sorted by
// distance, ties by position (insertion order): Python's exact search, as a stable rule.
function topK(codes, nBytes, query, k) {
  const count = codes.length / nBytes;
  const dist = new Int32Array(count);
  for (let p = 0; p < count; p++) {
    let d = 0;
    for (let j = 0; j < nBytes; j++) d += POPCOUNT[codes[p * nBytes + j] ^ query[j]];
    dist[p] = d;
  }
  const order = Array.from({ length: count }, (_, p) => p);
  order.sort((a, b) => dist[a] - dist[b] || a - b);
  return order.slice(0, Math.min(k, count)).map((p) => ({ position: p, distance: dist[p] }));
}

function hitsOf(index, query, k) {
  return topK(index.codes, index.bits / 8, query, k).map(({ position, distance }, r) => {
    const m = index.metadata[position] || {};
    const hit = { rank: r + 1, id: index.ids[position], distance, label: m.label ?? "",
                  path: m.path ?? "" }; // prettier-ignore
    if (m.dicom !== undefined) hit.dicom = m.dicom;
    return hit;
  });
}

function parseHex(hex, nBytes, where) {
  if (!/^([0-9a-fA-F]{2})+$/.test(hex) || hex.length !== 2 * nBytes)
    throw new Error(`${where}: ${JSON.stringify(hex)} is not ${nBytes} bytes of hex`);
  return Uint8Array.from(Buffer.from(hex, "hex"));
}

// ------------------------------------------------------------------ golden check
async function check(goldenPath, dataDir) {
  let golden;
  try {
    golden = JSON.parse(fs.readFileSync(goldenPath, "utf8"));
  } catch (err) {
    throw new Error(`${goldenPath}: cannot read the golden vectors (${err.message})`);
  }
  const fail = (what) => {
    throw new Error(`${goldenPath}: ${what}`);
  };
  const folder = path.dirname(goldenPath);
  const encoder = await openEncoder(path.join(folder, golden.contract), undefined);
  if (encoder.codesId !== golden.codes)
    fail(`codes ${golden.codes} are not this encoder's (${encoder.codesId})`);
  const nBytes = golden.bits / 8;
  let checked = 0;
  let skipped = 0;
  for (const image of golden.images) {
    let file;
    if (image.in === "export") file = path.join(folder, image.path);
    else if (dataDir) file = path.join(dataDir, image.path);
    else {
      skipped++;
      continue;
    }
    if (sha256(fs.readFileSync(file)) !== image.sha256)
      fail(`image ${image.id}: ${file} is not the file the golden vectors were made from`);
    const { input, code } = await encodePng(encoder, file);
    if (sha256(input) !== image.input_sha256)
      fail(`image ${image.id}: the prepared input differs (sha256 ${sha256(input).slice(0, 16)}...)`);
    if (toHex(code) !== image.code)
      fail(`image ${image.id}: code ${toHex(code)}, expected ${image.code}`);
    checked++;
  }
  const byId = new Map(golden.images.map((im) => [im.id, im]));
  const s = golden.search;
  const index = {
    bits: golden.bits,
    ids: s.index_ids,
    metadata: s.index_ids.map(() => ({})),
    codes: Buffer.concat(s.index_ids.map((id) => Buffer.from(parseHex(byId.get(id).code, nBytes, id)))),
  };
  for (const q of s.queries) {
    const got = hitsOf(index, parseHex(byId.get(q.query).code, nBytes, q.query), s.k)
      .map(({ rank, id, distance }) => ({ rank, id, distance }));
    if (JSON.stringify(got) !== JSON.stringify(q.hits))
      fail(`query ${q.query}: hits ${JSON.stringify(got)}, expected ${JSON.stringify(q.hits)}`);
  }
  const note = skipped ? ` (${skipped} dataset image(s) not checked: give --data)` : "";
  console.log(`ok: ${checked} image(s) and ${s.queries.length} search(es) as golden.json${note}`);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.check) return check(args.check, args.data);
  const index = loadIndex(args.index);
  let query;
  let queryName;
  if (args.code) {
    query = parseHex(args.code, index.bits / 8, "--code");
    queryName = args.code;
  } else {
    const encoder = await openEncoder(args.contract, args.model);
    if (encoder.codesId !== index.codesId)
      throw new Error(
        `index at ${args.index} was made by encoder '${index.codesId}', expected ` +
          `'${encoder.codesId}': re-index with the current encoder`,
      );
    query = (await encodePng(encoder, args.images[0])).code;
    queryName = args.images[0];
  }
  const hits = hitsOf(index, query, args.k);
  if (args.json) {
    console.log(JSON.stringify({ query: queryName, k: args.k, results: hits }, null, 2));
  } else {
    for (const h of hits) console.log(`${h.rank} ${h.id} ${h.distance}`);
  }
}

if (require.main === module) {
  main().catch((err) => {
    console.error(`error: ${err.message}`);
    process.exit(1);
  });
}

module.exports = { loadIndex, topK, hitsOf };

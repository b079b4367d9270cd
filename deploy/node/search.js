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

// Format 1 keeps ids and metadata in index.json; format 2 in items.jsonl, one line per
// item found through items_offsets.npy, so only the hits' lines are read.
const INDEX_FORMATS = [1, 2];
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
// An .npy file's header: { descr, fortran, shape, start } (start: the data's first byte).
function npyHeader(buf, file, what) {
  const magic = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY
  if (buf.length < 10 || !buf.subarray(0, 6).equals(magic))
    throw new Error(`${what} file ${file} is missing, truncated or corrupted: not an .npy file`);
  const major = buf[6];
  if (major !== 1 && major !== 2)
    throw new Error(`${what} file ${file}: unsupported .npy format version ${major}`);
  const lenBytes = major === 1 ? 2 : 4;
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = 8 + lenBytes + headerLen;
  const header = buf.subarray(8 + lenBytes, start).toString("latin1");
  const descr = /'descr':\s*'([^']*)'/.exec(header);
  const fortran = /'fortran_order':\s*(True|False)/.exec(header);
  const shape = /'shape':\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?,?\s*\)/.exec(header);
  return {
    text: header.trim(),
    descr: descr && descr[1],
    fortran: fortran && fortran[1] === "True",
    shape: shape && [Number(shape[1]), ...(shape[2] === undefined ? [] : [Number(shape[2])])],
    start,
  };
}

function readFile(file, what) {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new Error(`${what} file ${file} is missing, truncated or corrupted (${err.code})`);
  }
}

// codes.npy: NPY 1.0/2.0, uint8, C order, shape (count, bits / 8); the sidecar records
// the sha256 of the code bytes (the data after the header), checked before any use.
function readNpyCodes(file, count, nBytes) {
  const buf = readFile(file, "codes");
  const h = npyHeader(buf, file, "codes");
  if (!h.descr || h.fortran === null || !h.shape || h.shape.length !== 2 ||
      !["|u1", "<u1", ">u1"].includes(h.descr) || h.shape[0] !== count || h.shape[1] !== nBytes ||
      (h.fortran && count > 1))
    throw new Error(
      `codes file ${file} holds ${h.text}, expected uint8 (${count}, ${nBytes}) from the sidecar`,
    );
  const data = buf.subarray(h.start);
  if (data.length !== count * nBytes)
    throw new Error(
      `codes file ${file} is missing, truncated or corrupted: ${data.length} bytes of codes, ` +
        `expected ${count * nBytes}`,
    );
  return data;
}

// Format 2's items: items_offsets.npy (little-endian uint64, count + 1 byte offsets, first
// 0, last the size of items.jsonl; its size and sha256 are checked, it is read whole) and
// items.jsonl, of which only the line of an item asked for is read and checked, as
// Python's MappedIndex does (its sha256 is what `index verify` checks).
function openItems(folder, meta) {
  const itemsPath = path.join(folder, "items.jsonl");
  const offsetsPath = path.join(folder, "items_offsets.npy");
  const buf = readFile(offsetsPath, "offsets");
  if (buf.length !== meta.offsets_bytes || sha256(buf) !== meta.offsets_sha256)
    throw new Error(`offsets file ${offsetsPath} is corrupted: its size or sha256 differs from the sidecar's`);
  const h = npyHeader(buf, offsetsPath, "offsets");
  const count = meta.count;
  if (h.descr !== "<u8" || h.fortran === null || !h.shape || h.shape.length !== 1 ||
      h.shape[0] !== count + 1 || buf.length - h.start !== 8 * (count + 1))
    throw new Error(
      `offsets file ${offsetsPath} holds ${h.text}, expected little-endian uint64 (${count + 1},) from the sidecar`,
    );
  const offset = (p) => Number(buf.readBigUInt64LE(h.start + 8 * p));
  let fd;
  try {
    fd = fs.openSync(itemsPath, "r");
  } catch (err) {
    throw new Error(`items file ${itemsPath} is missing or unreadable (${err.code})`);
  }
  const size = fs.fstatSync(fd).size;
  if (size !== meta.items_bytes)
    throw new Error(`items file ${itemsPath} has ${size} bytes, the sidecar says ${meta.items_bytes}`);
  if (offset(0) !== 0 || offset(count) !== size)
    throw new Error(
      `offsets file ${offsetsPath} is corrupted: it runs from ${offset(0)} to ${offset(count)}, ` +
        `the items file has ${size} bytes (expected 0 to ${size})`,
    );
  return (p) => {
    const where = `items file ${itemsPath} is corrupted at item ${p} (line ${p + 1})`;
    const start = offset(p);
    const end = offset(p + 1);
    if (!(start >= 0 && start < end && end <= size))
      throw new Error(
        `offsets file ${offsetsPath} is corrupted at item ${p}: line [${start}, ${end}) is not ` +
          `inside the ${size} bytes of ${itemsPath}`,
      );
    const before = start ? 1 : 0; // the byte before a line is a line break
    const data = Buffer.alloc(end - start + before);
    const got = fs.readSync(fd, data, 0, data.length, start - before);
    const line = data.subarray(before);
    if (got !== data.length || (before && data[0] !== 0x0a) || line.indexOf(0x0a) !== line.length - 1)
      throw new Error(`${where}: line [${start}, ${end}) is not one whole line`);
    let entry;
    try {
      entry = JSON.parse(line.subarray(0, -1).toString("utf8"));
    } catch (err) {
      throw new Error(`${where}: not JSON (${err.message})`);
    }
    const keys = entry && typeof entry === "object" && !Array.isArray(entry) ? Object.keys(entry).sort() : [];
    if (keys.length !== 2 || keys[0] !== "id" || keys[1] !== "meta")
      throw new Error(`${where}: not an object with "id" and "meta" only`);
    if (typeof entry.id !== "string" && !Number.isInteger(entry.id))
      throw new Error(`${where}: ids must be str or int`);
    if (!entry.meta || typeof entry.meta !== "object" || Array.isArray(entry.meta))
      throw new Error(`${where}: metadata not a dict`);
    return { id: entry.id, meta: entry.meta };
  };
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
  if (!INDEX_FORMATS.includes(meta.format_version) || meta.metric !== "hamming")
    bad(`format ${meta.format_version} / metric ${meta.metric}; this host reads formats ${INDEX_FORMATS}, hamming`);
  if (!VALID_BITS.includes(meta.bits)) bad(`bits must be one of ${VALID_BITS}`);
  if (!Number.isInteger(meta.count) || meta.count < 0) bad("count is not an integer >= 0");
  let item;
  if (meta.format_version === 1) {
    if (!Array.isArray(meta.ids) || meta.ids.length !== meta.count) bad("count and ids disagree");
    if (!Array.isArray(meta.metadata) || meta.metadata.length !== meta.count)
      bad("count and metadata disagree");
    if (new Set(meta.ids).size !== meta.ids.length) bad("duplicate ids");
    item = (p) => ({ id: meta.ids[p], meta: meta.metadata[p] || {} });
  } else {
    for (const [key, type] of [["items_bytes", "number"], ["items_sha256", "string"],
                               ["offsets_bytes", "number"], ["offsets_sha256", "string"]]) // prettier-ignore
      if (typeof meta[key] !== type) bad(`'${key}' missing or not ${type === "number" ? "int" : "str"}`);
    item = openItems(folder, meta);
  }
  const codesPath = path.join(folder, "codes.npy");
  const codes = readNpyCodes(codesPath, meta.count, meta.bits / 8);
  if (sha256(codes) !== meta.codes_sha256)
    throw new Error(`codes file ${codesPath} is corrupted: its sha256 differs from the sidecar's`);
  return { bits: meta.bits, codesId: meta.fingerprint, item, codes };
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
    const { id, meta: m } = index.item(position);
    const hit = { rank: r + 1, id, distance, label: m.label ?? "",
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
    item: (p) => ({ id: s.index_ids[p], meta: {} }),
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

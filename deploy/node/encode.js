#!/usr/bin/env node
"use strict";
// Reference Node.js host for the exported Y-Net encoder.
//
//   node encode.js --contract ART_DIR/encoder.json [--model ART_DIR/encoder.onnx] IMAGE.png...
//
// prints one line per image: "<path> <packed code as hex>". The code is the model's
// `code` output: bits = hash > 0, packed MSB first (numpy.packbits), bits / 8 bytes.
// Hamming distance between two codes = popcount of their XOR.
// --dump-inputs DIR also writes each prepared model input as DIR/<n>.u8 (raw NHWC bytes).

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const { prepareImage } = require("./preprocess");

const FORMAT_VERSION = 1;

function usage(message) {
  if (message) console.error(`error: ${message}`);
  console.error("usage: node encode.js --contract encoder.json [--model encoder.onnx]");
  console.error("                      [--dump-inputs DIR] IMAGE.png...");
  process.exit(2);
}

function parseArgs(argv) {
  const args = { images: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--model" || a === "--contract" || a === "--dump-inputs") {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      args[a.slice(2).replace("-", "_")] = argv[++i];
    } else if (a === "-h" || a === "--help") {
      usage();
    } else if (a.startsWith("--")) {
      usage(`unknown option ${a}`);
    } else {
      args.images.push(a);
    }
  }
  if (!args.contract) usage("--contract is required");
  if (args.images.length === 0) usage("no images given");
  return args;
}

// The fields this host relies on; anything else is refused with the file named.
function loadContract(file) {
  let c;
  try {
    c = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`${file}: cannot read the encoder contract (${err.message})`);
  }
  const bad = (what) => {
    throw new Error(`${file}: ${what}`);
  };
  if (c.format_version !== FORMAT_VERSION)
    bad(`format_version ${c.format_version} is not supported (this host: ${FORMAT_VERSION})`);
  const inp = c.input || {};
  const shape = inp.shape || [];
  if (inp.dtype !== "uint8" || inp.layout !== "NHWC") bad("input must be uint8 NHWC");
  if (shape.length !== 4 || shape[1] !== shape[2] || ![1, 3].includes(inp.channels))
    bad(`input.shape ${JSON.stringify(shape)} is not [null, S, S, 1 or 3]`);
  const pre = c.preprocessing || {};
  if (!pre.resize || pre.resize.method !== "bilinear") bad("only bilinear resizing is supported");
  if (!pre.channels || !pre.channels.rgb_to_grey || pre.channels.rgb_to_grey.weights.length !== 3)
    bad("preprocessing.channels.rgb_to_grey.weights missing");
  if (c.bit_order !== "msb_first") bad(`bit_order ${c.bit_order} is not supported`);
  if (!c.outputs || !c.outputs.code || !c.outputs.code.name) bad("outputs.code missing");
  if (!c.files || !c.files.onnx) bad("files.onnx missing");
  return c;
}

// The model's bytes, refused unless their sha256 is the one encoder.json records for
// the ONNX file: an altered or swapped model would make codes no index expects. The
// bytes hashed are the bytes loaded (no second read of the file).
function checkedModel(modelPath, contract, contractPath) {
  const recorded = ((contract.artifacts || {}).onnx || {}).sha256;
  if (!recorded)
    throw new Error(
      `${contractPath} records no sha256 for ${contract.files.onnx} (exported before model ` +
        "files were hashed): re-export the model",
    );
  const bytes = fs.readFileSync(modelPath);
  const actual = crypto.createHash("sha256").update(bytes).digest("hex");
  if (actual !== recorded)
    throw new Error(
      `${modelPath} was altered or replaced: its sha256 ${actual.slice(0, 16)}... is not the ` +
        `${recorded.slice(0, 16)}... that ${contractPath} records; use the exported file or re-export`,
    );
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function toHex(bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

// The checked ONNX session of an export: the contract's fields, the model's sha256 and
// its input/output names, each refused with the file named.
async function openEncoder(contractPath, modelArg) {
  const contract = loadContract(contractPath);
  const modelPath = modelArg || path.join(path.dirname(contractPath), contract.files.onnx);
  if (!fs.existsSync(modelPath)) throw new Error(`${modelPath}: model file not found`);
  const model = checkedModel(modelPath, contract, contractPath);
  const ort = require("onnxruntime-node");
  let session;
  try {
    session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1 });
  } catch (err) {
    throw new Error(`${modelPath}: cannot load the ONNX model (${err.message})`);
  }
  const inputName = contract.input.name;
  const codeName = contract.outputs.code.name;
  if (!session.inputNames.includes(inputName) || !session.outputNames.includes(codeName))
    throw new Error(
      `${modelPath}: has inputs ${session.inputNames} / outputs ${session.outputNames}, ` +
        `the contract names ${inputName} / ${codeName}`,
    );
  // ONNX (float) codes: what an index filled by this model records (encoder.json artifacts).
  const codesId = contract.artifacts.onnx.codes || `${contract.fingerprint}+float`;
  return { ort, session, contract, modelPath, codesId };
}

// One PNG file -> { input: the prepared uint8 model input, code: the packed code bytes }.
async function encodePng(encoder, image) {
  const { ort, session, contract } = encoder;
  if (path.extname(image).toLowerCase() !== ".png")
    throw new Error(
      `${image}: only PNG images are supported by this host (DICOM, JPEG: python -m deploy)`,
    );
  let buffer;
  try {
    buffer = fs.readFileSync(image);
  } catch (err) {
    throw new Error(`${image}: cannot read (${err.code || err.message})`);
  }
  const [, size, , channels] = contract.input.shape;
  const pixels = prepareImage(buffer, contract, image);
  const feeds = { [contract.input.name]: new ort.Tensor("uint8", pixels, [1, size, size, channels]) };
  const codeName = contract.outputs.code.name;
  const out = await session.run(feeds, [codeName]);
  return { input: pixels, code: Uint8Array.from(out[codeName].data) };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const encoder = await openEncoder(args.contract, args.model);
  if (args.dump_inputs) fs.mkdirSync(args.dump_inputs, { recursive: true });
  for (const [n, image] of args.images.entries()) {
    const { input, code } = await encodePng(encoder, image);
    if (args.dump_inputs) fs.writeFileSync(path.join(args.dump_inputs, `${n}.u8`), input);
    console.log(`${image} ${toHex(code)}`);
  }
}

if (require.main === module) {
  main().catch((err) => {
    console.error(`error: ${err.message}`);
    process.exit(1);
  });
}

module.exports = { loadContract, checkedModel, openEncoder, encodePng, toHex };

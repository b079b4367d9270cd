"use strict";
// PNG -> the encoder's uint8 input, following encoder.json (the rules of
// deploy/preprocess.py, bit for bit):
//   decode:   grey PNGs stay 1 channel, colour/palette PNGs become RGB, alpha dropped;
//             1/2/4-bit grey scaled to 0..255; 16-bit grey: floor(v / 257 + 0.5);
//             other 16-bit samples (RGB, RGBA, grey+alpha): the high byte, as Pillow does.
//   resize:   only when the image is not size x size: Pillow's BILINEAR resize
//             (separable, kernel widened when shrinking, 22-bit fixed point).
//   channels: grey -> RGB replicates; RGB -> grey is round_half_even of the BT.601 luma.

const { PNG } = require("pngjs");

// ------------------------------------------------------------------ decode
function decodePng(buffer, where) {
  let png;
  try {
    // skipRescale: raw samples, so 16-bit and low-bit rules can follow Pillow exactly.
    png = PNG.sync.read(buffer, { skipRescale: true });
  } catch (err) {
    throw new Error(`${where}: not a readable PNG (${err.message})`);
  }
  const { width, height, depth, colorType, transColor, data } = png;
  const grey = colorType === 0 || colorType === 4;
  const channels = grey ? 1 : 3;
  const out = new Uint8Array(width * height * channels);
  const maxIn = 2 ** depth - 1;
  const toByte = (v) => {
    if (colorType === 3 || depth === 8) return v; // palette entries are already 8-bit
    if (depth === 16) return colorType === 0 ? Math.floor(v / 257 + 0.5) : v >> 8;
    return Math.floor((v * 255) / maxIn + 0.5); // 1, 2, 4-bit grey
  };
  for (let i = 0; i < width * height; i++) {
    let sample = [data[4 * i], data[4 * i + 1], data[4 * i + 2]];
    // pngjs zeroes pixels that match a tRNS colour; Pillow keeps their colour.
    if (transColor && colorType !== 3 && data[4 * i + 3] === 0) {
      sample = transColor.length === 1 ? [transColor[0], 0, 0] : transColor;
    }
    if (grey) out[i] = toByte(sample[0]);
    else for (let c = 0; c < 3; c++) out[3 * i + c] = toByte(sample[c]);
  }
  return { width, height, channels, data: out };
}

// ------------------------------------------------------------------ resize
const PRECISION_BITS = 32 - 8 - 2;

function bilinearFilter(x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis (box = whole image).
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const k = new Float64Array(xmax);
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      k[x] = bilinearFilter((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0.0 ? k[x] / ww : k[x];
      const fixed = w * (1 << PRECISION_BITS);
      kk[xx * ksize + x] = Math.trunc(w < 0 ? fixed - 0.5 : fixed + 0.5);
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(ss) {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// One separable pass along `axis` ("x" or "y") of an interleaved uint8 image.
function resamplePass(img, outLen, axis, coeffs, offset = 0, rows = null) {
  const { width, height, channels, data } = img;
  const outW = axis === "x" ? outLen : width;
  const outH = axis === "x" ? (rows ?? height) : outLen;
  const out = new Uint8Array(outW * outH * channels);
  const { ksize, bounds, kk } = coeffs;
  for (let yy = 0; yy < outH; yy++) {
    for (let xx = 0; xx < outW; xx++) {
      const o = axis === "x" ? xx : yy;
      const min = bounds[2 * o];
      const n = bounds[2 * o + 1];
      for (let c = 0; c < channels; c++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let t = 0; t < n; t++) {
          const src =
            axis === "x"
              ? ((yy + offset) * width + (t + min)) * channels + c
              : ((t + min) * width + xx) * channels + c;
          ss += data[src] * kk[o * ksize + t];
        }
        out[(yy * outW + xx) * channels + c] = clip8(ss);
      }
    }
  }
  return { width: outW, height: outH, channels, data: out };
}

// Pillow Image.resize((size, size), Image.BILINEAR) for mode L / RGB. Pillow (13)
// runs the vertical pass first when it widens and shortens the image at once, else the
// horizontal pass first (reading only the rows the vertical pass needs); the order
// changes the rounding of the 8-bit intermediate image, so it is kept here.
function resizeBilinear(img, size) {
  if (img.width === size && img.height === size) return img;
  if (size > img.width && size < img.height) {
    const tall = resamplePass(img, size, "y", coefficients(img.height, size));
    return resamplePass(tall, size, "x", coefficients(img.width, size));
  }
  const vert = coefficients(img.height, size);
  const firstRow = vert.bounds[0];
  const lastRow = vert.bounds[2 * size - 2] + vert.bounds[2 * size - 1];
  let cur = img;
  if (img.width !== size) {
    for (let i = 0; i < size; i++) vert.bounds[2 * i] -= firstRow;
    cur = resamplePass(img, size, "x", coefficients(img.width, size), firstRow, lastRow - firstRow);
  }
  if (img.height !== size) cur = resamplePass(cur, size, "y", vert);
  return cur;
}

// ------------------------------------------------------------------ channels
function roundHalfEven(x) {
  const r = Math.round(x); // rounds .5 up
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function convertChannels(img, channels, lumaWeights) {
  if (img.channels === channels) return img;
  const n = img.width * img.height;
  const out = new Uint8Array(n * channels);
  if (img.channels === 1) {
    for (let i = 0; i < n; i++) out.fill(img.data[i], 3 * i, 3 * i + 3);
  } else {
    const [wr, wg, wb] = lumaWeights;
    for (let i = 0; i < n; i++) {
      const d = img.data;
      const luma = wr * d[3 * i] + wg * d[3 * i + 1] + wb * d[3 * i + 2];
      out[i] = Math.min(255, Math.max(0, roundHalfEven(luma)));
    }
  }
  return { width: img.width, height: img.height, channels, data: out };
}

// PNG bytes -> Uint8Array (size * size * channels), NHWC order for one image.
// The size limits of encoder.json, checked from the PNG header (IHDR) before decoding, so
// a header claiming 50000 x 50000 pixels is refused without allocating them.
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function checkPngSize(buffer, decode, where) {
  if (buffer.length < 24 || !buffer.subarray(0, 8).equals(PNG_SIGNATURE)) {
    throw new Error(`${where}: not a readable PNG (no PNG signature and header)`);
  }
  const width = buffer.readUInt32BE(16);
  const height = buffer.readUInt32BE(20);
  if (decode.max_pixels !== undefined && width * height > decode.max_pixels) {
    throw new Error(
      `${where}: ${width}x${height} pixels is more than ${decode.max_pixels} pixels ` +
        "(refused as a possible decompression bomb)",
    );
  }
  if (decode.min_side !== undefined && Math.min(width, height) < decode.min_side) {
    throw new Error(`${where}: ${width}x${height} pixels: a side is under ${decode.min_side}`);
  }
}

function prepareImage(buffer, contract, where) {
  const size = contract.input.shape[1];
  const channels = contract.input.channels;
  const weights = contract.preprocessing.channels.rgb_to_grey.weights;
  checkPngSize(buffer, contract.preprocessing.decode, where);
  const decoded = decodePng(buffer, where);
  return convertChannels(resizeBilinear(decoded, size), channels, weights).data;
}

module.exports = { decodePng, resizeBilinear, convertChannels, prepareImage, roundHalfEven };

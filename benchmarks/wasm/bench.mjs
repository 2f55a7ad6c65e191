// torsh-gen's model.wasm against onnxruntime-web's WASM backend, side by side in one Node
// process: same model, same seeded input, one thread, SIMD on both.
//
//   npm install            (once, in benchmarks/wasm: onnxruntime-web pinned in package.json)
//   node bench.mjs --artifact DIR --onnx MODEL.onnx [--runs 30] [--warmup 3] [--blocks 5] [--json]
//
// DIR is a `compile_model(..., target="wasm32")` artifact of MODEL.onnx. The engines are
// timed in alternating blocks (A B A B ...) so drift of the machine hits both alike; each
// call is timed with performance.now() and the median over all blocks is reported, with
// the ratio ours / onnxruntime-web. Outputs of the two are compared (max |diff|).

import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-web";

const ARRAYS = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array,
  int32: Int32Array, int64: BigInt64Array, bool: Uint8Array,
};

function options() {
  const { values } = parseArgs({
    options: {
      artifact: { type: "string" },
      onnx: { type: "string" },
      runs: { type: "string", default: "30" },
      warmup: { type: "string", default: "3" },
      blocks: { type: "string", default: "5" },
      json: { type: "boolean" },
    },
  });
  if (!values.artifact || !values.onnx) {
    const flags = "[--runs N] [--warmup N] [--blocks N] [--json]";
    process.stderr.write(`usage: node bench.mjs --artifact DIR --onnx MODEL.onnx ${flags}\n`);
    process.exit(2);
  }
  const numbers = { runs: Number(values.runs), warmup: Number(values.warmup) };
  return { ...values, ...numbers, blocks: Number(values.blocks) };
}

function seeded(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomInputs(signature) {
  const random = seeded(7);
  const out = {};
  for (const s of signature.inputs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const data = new ARRAYS[s.dtype](n);
    for (let i = 0; i < n; i++) {
      if (s.dtype.startsWith("float")) data[i] = 2 * random() - 1;
      else if (s.dtype === "int64") data[i] = BigInt(Math.floor(random() * 10));
      else data[i] = Math.floor(random() * (s.dtype === "bool" ? 2 : 10));
    }
    out[s.name] = { data, dims: [...s.shape] };
  }
  return out;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

async function engines(opts) {
  const dir = resolve(opts.artifact);
  const module = await import(pathToFileURL(resolve(dir, "model.js")).href);
  const t0 = performance.now();
  const ours = await module.load(resolve(dir, "model.wasm"));
  const oursLoad = performance.now() - t0;
  ort.env.wasm.numThreads = 1;
  ort.env.logLevel = "error";
  const t1 = performance.now();
  const session = await ort.InferenceSession.create(await readFile(opts.onnx), {
    executionProviders: ["wasm"], graphOptimizationLevel: "all",
  });
  const ortLoad = performance.now() - t1;
  const inputs = randomInputs(module.signature);
  const feeds = {};
  for (const s of module.signature.inputs) {
    const type = s.dtype === "bool" ? "bool" : s.dtype;
    feeds[s.name] = new ort.Tensor(type, inputs[s.name].data, inputs[s.name].dims);
  }
  return {
    signature: module.signature,
    load: { ours: oursLoad, ort: ortLoad },
    ours: async () => ours.run(inputs),
    ort: async () => session.run(feeds),
  };
}

function maxDiff(signature, a, b) {
  let worst = 0;
  for (const s of signature.outputs) {
    const x = a[s.name].data;
    const y = b[s.name].data;
    if (x.length !== y.length) return Infinity;
    for (let i = 0; i < x.length; i++) {
      worst = Math.max(worst, Math.abs(Number(x[i]) - Number(y[i])));
    }
  }
  return worst;
}

async function main() {
  const opts = options();
  const e = await engines(opts);
  const first = { ours: 0, ort: 0 };
  const results = {};
  for (const name of ["ours", "ort"]) {
    const t0 = performance.now();
    results[name] = await e[name]();
    first[name] = performance.now() - t0;
    for (let k = 1; k < opts.warmup; k++) await e[name]();
  }
  const times = { ours: [], ort: [] };
  const perBlock = Math.max(1, Math.ceil(opts.runs / opts.blocks));
  for (let b = 0; b < opts.blocks; b++) {
    for (const name of b % 2 ? ["ort", "ours"] : ["ours", "ort"]) {
      for (let k = 0; k < perBlock; k++) {
        const t0 = performance.now();
        await e[name]();
        times[name].push(performance.now() - t0);
      }
    }
  }
  const report = {
    ours_ms: median(times.ours),
    ort_ms: median(times.ort),
    ratio: median(times.ours) / median(times.ort),
    ours_min_ms: Math.min(...times.ours),
    ort_min_ms: Math.min(...times.ort),
    runs: times.ours.length,
    first_ms: first, load_ms: e.load, max_abs_diff: maxDiff(e.signature, results.ours, results.ort),
    node: process.versions.node, onnxruntime_web: ort.env.versions?.web ?? "?",
  };
  if (opts.json) {
    console.log(JSON.stringify(report));
  } else {
    const diff = report.max_abs_diff.toExponential(2);
    const ms = `ours ${report.ours_ms.toFixed(3)} ms, ort-web ${report.ort_ms.toFixed(3)} ms`;
    const ratio = `ratio ${report.ratio.toFixed(2)} (median of ${report.runs})`;
    console.log(`${ms}, ${ratio}; max |diff| ${diff}`);
  }
}

try {
  await main();
} catch (err) {
  process.stderr.write(`error: ${err.message.split("\n")[0]}\n`);
  process.exitCode = 1;
}

'use strict';
// Petrel's nodejs20.x runtime: pulls invocations from the Runtime API
// (AWS_LAMBDA_RUNTIME_API), calls the handler named by _HANDLER (file.export)
// and posts the result or the error, in the shapes AWS Lambda's own Node.js
// runtime produces. Async handlers and callback handlers both work.

const net = require('net');
const path = require('path');
const fs = require('fs');
const { pathToFileURL } = require('url');
const util = require('util');
const Module = require('module');
const { Writable } = require('stream');


const BASE = '/2018-06-01/runtime';
const NEXT = BASE + '/invocation/next';
// What the environment says, read by configure() once the runtime has its function.
let TASK;
let api;
let ENV;
let traceEnv;

// A minimal HTTP/1.1 client on one keep-alive connection (the http module's client
// costs several times more CPU per exchange, and every invocation makes two): to
// Petrel's abstract socket when PETREL_RUNTIME_API_SOCKET names one (the same API
// without the TCP/IP stack in every exchange), else to AWS_LAMBDA_RUNTIME_API.
class RuntimeAPI {
  constructor(host, port, unix) {
    this.host = host;
    this.port = port;
    this.unix = unix && unix.length > 1 && unix[0] === '@' ? '\0' + unix.slice(1) : null;
    this.hostPort = `${host}:${port}`;
    this.sock = null;
    this.buf = Buffer.alloc(0);
    this.waiter = null;
    this.connecting = null;
  }

  // One attempt at a time: main() starts one before it loads the handler (the connection
  // opens meanwhile), and the first request waits for it.
  connect() {
    if (!this.connecting) this.connecting = this.open().finally(() => { this.connecting = null; });
    return this.connecting;
  }

  open() {
    if (!this.unix) return this.connectTo({ host: this.host, port: this.port });
    return this.connectTo({ path: this.unix }).catch(() => {
      this.unix = null; // not there: TCP from now on
      return this.connectTo({ host: this.host, port: this.port });
    });
  }

  connectTo(address) {
    return new Promise((resolve, reject) => {
      const s = net.connect(address);
      s.once('error', reject);
      s.once('connect', () => {
        s.removeListener('error', reject);
        s.setNoDelay(true); // a no-op on the abstract socket
        s.on('error', () => {}); // 'close' follows
        s.on('data', (chunk) => {
          this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
          this.parse();
        });
        s.on('close', () => {
          // A close we did not ask for (after "Connection: close" parse() lets go first).
          if (this.sock !== s) return;
          this.sock = null;
          const w = this.waiter;
          this.waiter = null;
          if (w) w.reject(new Error('the Runtime API closed the connection'));
        });
        this.sock = s;
        this.buf = Buffer.alloc(0);
        resolve();
      });
    });
  }

  // Hands every complete answer in the buffer to the waiter, in order.
  parse() {
    while (this.waiter) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const lines = this.buf.toString('latin1', 0, end).split('\r\n');
      const status = parseInt(lines[0].split(' ')[1], 10);
      const headers = {};
      for (let i = 1; i < lines.length; i++) {
        const c = lines[i].indexOf(':');
        if (c > 0) headers[lines[i].slice(0, c).trim().toLowerCase()] = lines[i].slice(c + 1).trim();
      }
      const length = parseInt(headers['content-length'] || '0', 10);
      if (this.buf.length < end + 4 + length) return;
      const body = this.buf.subarray(end + 4, end + 4 + length);
      this.buf = this.buf.subarray(end + 4 + length);
      if ((headers.connection || '').toLowerCase() === 'close' && this.sock) {
        const s = this.sock;
        this.sock = null;
        s.destroy();
      }
      this.waiter.answer({ status, headers, body });
    }
  }

  request(method, urlPath, body, headers) {
    return this.requests([[method, urlPath, body, headers]]).then((a) => a[0]);
  }

  // POSTs a result and asks for the next invocation in the same write (HTTP/1.1
  // pipelining): one wake-up for the 202 and the event together. Answers `next`.
  postThenNext(urlPath, body, headers) {
    return this.requests([['POST', urlPath, body, headers], ['GET', NEXT]]).then((a) => a[1]);
  }

  // Two attempts, the second on a new connection. Plain promises, no async frame: this
  // runs twice per invocation.
  requests(reqs) {
    const first = this.sock ? this.exchange(reqs) : this.connect().then(() => this.exchange(reqs));
    return first.catch(() => {
      this.drop();
      return this.connect().then(() => this.exchange(reqs)).catch((err) => { this.drop(); throw err; });
    });
  }

  // POSTs a response in the Runtime API's streaming mode: `run(write)` writes the parts
  // (each sent as a chunk at once); a failure of `run` ends the stream with Lambda's error
  // trailers. The head goes out with the first part, so a content type set before it counts.
  async stream(urlPath, contentType, run) {
    if (!this.sock) await this.connect();
    const sock = this.sock;
    let headSent = false;
    const head = () => {
      if (headSent) return;
      headSent = true;
      sock.write(`POST ${urlPath} HTTP/1.1\r\nHost: ${this.hostPort}\r\nLambda-Runtime-Function-Response-Mode: streaming\r\n`
        + `Content-Type: ${contentType() || 'application/octet-stream'}\r\nTransfer-Encoding: chunked\r\n`
        + 'Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n');
    };
    const write = (chunk) => {
      const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
      head();
      if (b.length === 0) return; // an empty chunk would end the body
      sock.write(`${b.length.toString(16)}\r\n`);
      sock.write(b);
      sock.write('\r\n');
    };
    let failure = null;
    try { await run(write); } catch (e) { failure = e; }
    head();
    const answered = new Promise((resolve, reject) => { this.waiter = { reject, answer: (a) => { this.waiter = null; resolve(a); } }; });
    if (failure) {
      const doc = errorDocument(failure);
      process.stderr.write(`${new Date().toISOString()}\t${currentRequestId}\tERROR\tInvoke Error \t${JSON.stringify(doc)}\n`);
      sock.write(`0\r\nLambda-Runtime-Function-Error-Type: ${doc.errorType}\r\n`
        + `Lambda-Runtime-Function-Error-Body: ${Buffer.from(JSON.stringify(doc)).toString('base64')}\r\n\r\n`);
    } else {
      sock.write('0\r\n\r\n');
    }
    return answered;
  }

  drop() {
    this.waiter = null;
    if (this.sock) { const s = this.sock; this.sock = null; s.destroy(); }
  }

  exchange(reqs) {
    // One string, written as UTF-8: heads are ASCII, bodies are JSON text.
    let out = '';
    for (const [method, urlPath, body, headers] of reqs) {
      const length = body === undefined ? 0 : Buffer.byteLength(body);
      out += `${method} ${urlPath} HTTP/1.1\r\nHost: ${this.hostPort}\r\nContent-Length: ${length}\r\n`;
      if (headers) for (const k of Object.keys(headers)) out += `${k}: ${headers[k]}\r\n`;
      out += '\r\n';
      if (length) out += body;
    }
    return new Promise((resolve, reject) => {
      const answers = [];
      this.waiter = {
        reject,
        answer: (a) => {
          answers.push(a);
          if (answers.length === reqs.length) {
            this.waiter = null;
            resolve(answers);
          } else if (!this.sock) {
            // The server closed after an answer: ask again for what is left.
            this.waiter = null;
            this.requests(reqs.slice(answers.length)).then((rest) => resolve(answers.concat(rest)), reject);
          }
        },
      };
      this.sock.write(out, 'utf8');
    });
  }
}


// Response streaming, as Lambda's Node.js runtime offers it: a handler wrapped in
// awslambda.streamifyResponse gets a writable stream as its second argument; what it
// writes reaches the caller as it writes it (InvokeWithResponseStream).
const STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
class ResponseStream extends Writable {
  constructor(write) {
    super({ write: (chunk, encoding, callback) => { write(chunk); callback(); } });
    this.contentType = undefined;
  }
  setContentType(type) { this.contentType = type; }
}
globalThis.awslambda = {
  streamifyResponse(handler) {
    handler[STREAMING] = true;
    return handler;
  },
  HttpResponseStream: {
    // An HTTP answer's status and headers ahead of its body (what function URLs read).
    from(stream, prelude) {
      stream.setContentType('application/vnd.awslambda.http-integration-response');
      stream.write(JSON.stringify(prelude || {}));
      stream.write(Buffer.alloc(8));
      return stream;
    },
  },
};

// Runs a streaming handler: the response ends when the handler has returned and its
// stream has finished (ended by the handler, or here).
function invokeStreaming(fn, event, context, requestId) {
  let stream;
  return api.stream(`${BASE}/invocation/${requestId}/response`, () => stream && stream.contentType, async (write) => {
    stream = new ResponseStream(write);
    const finished = new Promise((resolve, reject) => { stream.once('finish', resolve); stream.once('error', reject); });
    await fn(event, stream, context);
    if (!stream.writableEnded) stream.end();
    await finished;
  });
}
const request = (method, urlPath, body, headers) => api.request(method, urlPath, body, headers);

let currentRequestId = null;
// console.* write Lambda's text format: timestamp, request id, level, message.
for (const [name, level] of [['log', 'INFO'], ['info', 'INFO'], ['warn', 'WARN'], ['error', 'ERROR'], ['debug', 'DEBUG'], ['trace', 'TRACE']]) {
  const stream = (level === 'ERROR' || level === 'WARN') ? process.stderr : process.stdout;
  console[name] = (...args) => {
    const msg = util.format(...args).replace(/\n/g, '\r');
    stream.write(`${new Date().toISOString()}\t${currentRequestId || 'undefined'}\t${level}\t${msg}\n`);
  };
}

function errorDocument(err) {
  if (err instanceof Error) {
    return { errorType: err.name || 'Error', errorMessage: err.message, trace: (err.stack || '').split('\n') };
  }
  return { errorType: typeof err === 'string' ? 'string' : 'Error', errorMessage: typeof err === 'string' ? err : JSON.stringify(err), trace: [] };
}

async function initError(type, message, trace) {
  const doc = { errorType: type, errorMessage: message, trace: trace || [] };
  process.stderr.write(`${new Date().toISOString()}\tundefined\tERROR\t${JSON.stringify(doc)}\n`);
  await request('POST', BASE + '/init/error', JSON.stringify(doc),
    { 'Content-Type': 'application/json', 'Lambda-Runtime-Function-Error-Type': type });
  process.exit(1);
}

async function loadHandler() {
  const handler = process.env._HANDLER || '';
  const dot = handler.lastIndexOf('.');
  if (dot <= 0 || dot === handler.length - 1) {
    return initError('Runtime.MalformedHandlerName', `Bad handler ${handler}`);
  }
  const modulePath = handler.slice(0, dot);
  const exportPath = handler.slice(dot + 1);
  const base = path.resolve(TASK, modulePath);
  let file = null;
  for (const ext of ['.js', '.mjs', '.cjs']) {
    if (fs.existsSync(base + ext)) { file = base + ext; break; }
  }
  let mod;
  try {
    if (file === null) {
      const e = new Error(`Cannot find module '${modulePath}'\nRequire stack:\n- ${__filename}`);
      e.name = 'Error';
      throw Object.assign(e, { code: 'MODULE_NOT_FOUND' });
    }
    if (file.endsWith('.mjs')) {
      mod = await import(pathToFileURL(file).href);
    } else {
      try {
        mod = require(file);
      } catch (e) {
        if (e && e.code === 'ERR_REQUIRE_ESM') mod = await import(pathToFileURL(file).href);
        else throw e;
      }
    }
  } catch (e) {
    if (e && e.code === 'MODULE_NOT_FOUND') {
      return initError('Runtime.ImportModuleError', `Error: ${e.message}`, (e.stack || '').split('\n'));
    }
    if (e instanceof SyntaxError) {
      return initError('Runtime.UserCodeSyntaxError', `${e.name}: ${e.message}`, (e.stack || '').split('\n'));
    }
    const doc = errorDocument(e);
    return initError(doc.errorType, doc.errorMessage, doc.trace);
  }
  let fn = mod;
  for (const part of exportPath.split('.')) fn = fn == null ? undefined : fn[part];
  if (fn === undefined && mod && mod.default) {
    fn = mod.default;
    for (const part of exportPath.split('.')) fn = fn == null ? undefined : fn[part];
  }
  if (typeof fn !== 'function') {
    return initError('Runtime.HandlerNotFound', `${modulePath}.${exportPath} is undefined or not exported`);
  }
  return fn;
}

// process.env._X_AMZN_TRACE_ID, per invocation, without setenv(): glibc keeps every
// distinct value ever set until the process ends (about 200 bytes per invocation, since
// each has its own id). process.env becomes a proxy of itself that answers that one name
// from here; every other name goes to the real environment, and child processes, which
// start with process.env by default, see the trace id too.
function traceEnvironment() {
  const KEY = '_X_AMZN_TRACE_ID';
  const real = process.env;
  let value;
  const set = (v) => { value = v ? String(v) : undefined; };
  delete real[KEY];
  process.env = new Proxy(real, {
    get: (t, k) => (k === KEY ? value : t[k]),
    set: (t, k, v) => { if (k === KEY) set(v); else t[k] = v; return true; },
    has: (t, k) => (k === KEY ? value !== undefined : k in t),
    deleteProperty: (t, k) => { if (k === KEY) { value = undefined; return true; } return delete t[k]; },
    ownKeys: (t) => (value === undefined ? Reflect.ownKeys(t) : Reflect.ownKeys(t).concat(KEY)),
    getOwnPropertyDescriptor: (t, k) => (k === KEY
      ? (value === undefined ? undefined : { value, writable: true, enumerable: true, configurable: true })
      : Reflect.getOwnPropertyDescriptor(t, k)),
    defineProperty: (t, k, d) => { if (k === KEY) { set(d.value); return true; } return Reflect.defineProperty(t, k, d); },
  });
  return { set };
}

// The instance's constants, read once from the environment (every process.env read is a
// call into C).
function configure() {
  const [host, port] = (process.env.AWS_LAMBDA_RUNTIME_API || '127.0.0.1:9001').split(':');
  TASK = process.env.LAMBDA_TASK_ROOT || '/var/task';
  api = new RuntimeAPI(host, Number(port), process.env.PETREL_RUNTIME_API_SOCKET);
  ENV = {
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
  };
  traceEnv = traceEnvironment();
}

// A pre-started runtime (petreld started it ahead with the runtime's constant variables
// and no function: see docs/design.md). It first runs one Runtime API exchange against the
// throwaway peer its sandbox's init offers (@petrel-prestart), so that the code of that
// path is compiled before any function waits for it; then says it has loaded, waits for
// its function, and makes the
// process what a fresh start's would be: the working directory, the whole environment (in
// the same order) and the module paths Node computed from it. It keeps no descriptor.
async function prestarted() {
  const fdText = process.env.PETREL_STEM_FD;
  if (fdText === undefined) return;
  const fd = Number(fdText);
  const warm = new RuntimeAPI('127.0.0.1', 9001, '@petrel-prestart');
  warm.connect = () => warm.connectTo({ path: warm.unix }); // never TCP
  try {
    await warm.request('GET', NEXT, undefined, { 'Petrel-Init-Start': '0' });
  } catch (e) {
    // Only slower without it.
  }
  warm.drop();
  await new Promise((resolve) => setImmediate(resolve)); // the socket's close completes
  fs.writeSync(fd, 'r');
  const parts = [];
  const buf = Buffer.allocUnsafe(65536);
  for (;;) {
    const n = fs.readSync(fd, buf, 0, buf.length, null);
    if (n === 0) break;
    parts.push(Buffer.from(buf.subarray(0, n)));
  }
  fs.closeSync(fd);
  const fields = Buffer.concat(parts).toString('utf8').split('\0');
  for (const k of Object.keys(process.env)) delete process.env[k];
  for (const item of fields.slice(1, -1)) {
    const eq = item.indexOf('=');
    process.env[item.slice(0, eq)] = item.slice(eq + 1);
  }
  process.chdir(fields[0]);
  Module._initPaths();
}

function makeContext(headers, requestId) {
  const deadline = Number(headers['lambda-runtime-deadline-ms'] || 0);
  const cc = headers['lambda-runtime-client-context'];
  const ci = headers['lambda-runtime-cognito-identity'];
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: ENV.functionName,
    functionVersion: ENV.functionVersion,
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    memoryLimitInMB: ENV.memoryLimitInMB,
    awsRequestId: requestId,
    logGroupName: ENV.logGroupName,
    logStreamName: ENV.logStreamName,
    clientContext: cc ? JSON.parse(cc) : undefined,
    identity: ci ? JSON.parse(ci) : undefined,
    getRemainingTimeInMillis: () => Math.max(deadline - Date.now(), 0),
  };
}

function invokeHandler(fn, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (err, result) => {
      if (settled) return;
      settled = true;
      if (err !== undefined && err !== null) reject(err); else resolve(result);
    };
    context.done = done;
    context.succeed = (r) => done(null, r);
    context.fail = (e) => done(e === undefined ? new Error('handled') : e);
    try {
      const r = fn(event, context, done);
      if (r && typeof r.then === 'function') r.then((v) => done(null, v), (e) => done(e === undefined ? new Error('undefined') : e));
      else if (fn.length < 3) done(null, r);
    } catch (e) {
      done(e);
    }
  });
}

async function main() {
  // To the millisecond, in both paths: a long-lived process's performance.timeOrigin drifts
  // from the wall clock, and touching `performance` loads perf_hooks, which a pre-started
  // and a fresh runtime must do alike (test_prestart compares process.moduleLoadList).
  const initStart = Date.now().toFixed(3);
  api.connect().catch(() => {}); // a failure is the first request's to report
  const fn = await loadHandler();
  let next = await request('GET', NEXT, undefined, { 'Petrel-Init-Start': initStart });
  for (;;) {
    if (next.status !== 200) {
      await new Promise((r) => setTimeout(r, 10));
      next = await request('GET', NEXT);
      continue;
    }
    const requestId = next.headers['lambda-runtime-aws-request-id'];
    currentRequestId = requestId;
    traceEnv.set(next.headers['lambda-runtime-trace-id']);
    let event;
    try {
      event = next.body.length ? JSON.parse(next.body.toString('utf8')) : {};
    } catch (e) {
      next = await postError(requestId, { errorType: 'Runtime.UnmarshalError', errorMessage: `Unable to parse event: ${e.message}`, trace: [] });
      continue;
    }
    if (fn[STREAMING]) {
      await invokeStreaming(fn, event, makeContext(next.headers, requestId), requestId);
      next = await request('GET', NEXT);
      continue;
    }
    let result;
    try {
      result = await invokeHandler(fn, event, makeContext(next.headers, requestId));
    } catch (err) {
      const doc = errorDocument(err);
      process.stderr.write(`${new Date().toISOString()}\t${requestId}\tERROR\tInvoke Error \t${JSON.stringify(doc)}\n`);
      next = await postError(requestId, doc);
      continue;
    }
    let body;
    try {
      body = result === undefined ? 'null' : JSON.stringify(result);
    } catch (err) {
      const doc = errorDocument(err);
      process.stderr.write(`${new Date().toISOString()}\t${requestId}\tERROR\tInvoke Error \t${JSON.stringify(doc)}\n`);
      next = await postError(requestId, doc);
      continue;
    }
    next = await api.postThenNext(`${BASE}/invocation/${requestId}/response`, body, { 'Content-Type': 'application/json' });
  }
}

// Posts an invocation's error; answers the next `next`.
function postError(requestId, doc) {
  return api.postThenNext(`${BASE}/invocation/${requestId}/error`, JSON.stringify(doc),
    { 'Content-Type': 'application/json', 'Lambda-Runtime-Function-Error-Type': doc.errorType });
}

process.on('unhandledRejection', (reason) => {
  const doc = errorDocument(reason);
  process.stderr.write(`${new Date().toISOString()}\t${currentRequestId}\tERROR\tUnhandled Promise Rejection \t${JSON.stringify(doc)}\n`);
  process.exit(128);
});

prestarted()
  .then(() => { configure(); return main(); })
  .catch((e) => { process.stderr.write(String(e && e.stack || e) + '\n'); process.exit(1); });

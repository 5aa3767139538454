// Many Socket.IO clients in one Node process, websocket only, driven by the benchmark over
// stdin/stdout, one JSON object per line each way.
//
//   BENCH_CLIENT=lean node clients.mjs       the Socket.IO protocol over a bare `ws` (LeanSocket)
//   BENCH_CLIENT=official node clients.mjs   the official socket.io-client
//
// Commands (each may carry a `ref`, echoed in its answer):
//   {cmd: "setup", url, users: [[id, token], ...], event, track} -> {type: "setup", count}
//        `track`: event names whose first arrival after each connect is timed (awaitEvent)
//   {cmd: "connect", concurrency, timeoutMs, deadlineMs, limit, phase}
//                                                              -> {type: "connect", ok, failed, skipped,
//        errors, start, end, lat, left}   connects every client not connected, `concurrency` at a
//        time (0: all at once); after `deadlineMs` no new attempt starts (they count as skipped);
//        `limit`: at most that many clients this time; `phase`: a client already tried in this
//        phase is not tried again (`left`: clients not tried yet in the phase)
//   {cmd: "await", key, expect, timeoutMs}                     -> {type: "await", count, dups, times,
//        sample}  waits until `expect` clients (default: every connected one) received the
//        event whose payload.documentId is `key`
//   {cmd: "awaitEvent", event, timeoutMs}                      -> {type: "awaitEvent", count, times}
//        waits until every connected client received a tracked event since it connected
//   {cmd: "read", event, notificationId, count, timeoutMs}     -> {type: "read", start, end, times, acks}
//        the first `count` connected clients emit `event` {notificationId} at once, with an ack
//   {cmd: "disconnect"}                                        -> {type: "disconnect", closed}
//   {cmd: "status"}                                            -> {type: "status", connected, dropped}
//   {cmd: "collect"}                                           -> {type: "collect", ms, exposed}
//        a minor garbage collection now (node --expose-gc: the young generation emptied), so that
//        the publication that follows is not received in the middle of one of this process's
//        collections
//   {cmd: "gcs"}                                               -> {type: "gcs", gc}
//        this process's collections since the last await or gcs, [start, ms, kind] each
//   {cmd: "exit"}
// Times are wall-clock milliseconds (performance.timeOrigin + performance.now()), comparable with
// the orchestrator's time.time() * 1000 on the same machine.
import { EventEmitter } from "node:events";
import readline from "node:readline";
import { io } from "socket.io-client";
import WebSocket from "ws";

const LEAN = process.env.BENCH_CLIENT === "lean";
const now = () => performance.timeOrigin + performance.now();
const send = (message) => process.stdout.write(JSON.stringify(message) + "\n");

let url = "";
let event = "notificacion";
let tracked = [];
let clients = []; // {id, token, socket, connected, seen: Set}
const received = new Map(); // key -> {times: [], dups}
const waiters = new Set(); // {key, expect, resolve}
const dropped = {}; // unexpected disconnect reason -> count
const eventWaiters = new Set(); // {check}
let gcs = []; // [start (wall ms), duration ms, kind] of this process's collections since the last await or gcs
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcs.push([performance.timeOrigin + e.startTime, e.duration, e.detail?.kind ?? e.kind]);
}).observe({ entryTypes: ["gc"] });

function record(client, payload) {
  const at = now();
  const key = String(payload?.documentId ?? payload?.id);
  let entry = received.get(key);
  if (!entry) {
    entry = { times: [], dups: 0, sample: payload };
    received.set(key, entry);
  }
  if (client.seen.has(key)) {
    entry.dups += 1;
    return;
  }
  client.seen.add(key);
  entry.times.push(at);
  for (const waiter of waiters) {
    if (waiter.key === key && entry.times.length >= waiter.expect) waiter.resolve();
  }
}

// The same Socket.IO v5 / Engine.IO v4 conversation as socket.io-client's, over a bare `ws`
// WebSocket, for the subset this file uses: `on`/`once` (connect, connect_error, disconnect, the
// server's events), `close()`, `timeout(ms).emit(event, data, ack)`. Its errors and disconnect
// reasons are socket.io-client's. Why: the clients share the machine's two cores with the server,
// and socket.io-client's layers above `ws` (Engine.IO's transport and socket, the Manager, three
// emitters per packet) took about 60% of a client process's CPU per received event (a CPU profile
// of a 2,000-client fan-out); what a browser spends on its own machine is not the server's time.
class LeanSocket {
  constructor(base, { auth, query, perMessageDeflate }) {
    const params = new URLSearchParams({ ...query, EIO: "4", transport: "websocket" });
    this.auth = auth;
    this.events = new EventEmitter();
    this.connected = false;
    this.acks = new Map(); // id -> callback
    this.nextAck = 0;
    this.ended = false;
    this.pingTimer = null;
    this.ws = new WebSocket(`${base.replace(/^http/, "ws")}/socket.io/?${params}`, {
      perMessageDeflate: perMessageDeflate !== false,
    });
    this.ws.on("message", (data) => this.packet(data.toString()));
    this.ws.on("error", (error) => this.end(this.connected ? "transport error" : error));
    this.ws.on("close", () => this.end("transport close"));
  }

  on(event, listener) {
    this.events.on(event, listener);
    return this;
  }

  once(event, listener) {
    this.events.once(event, listener);
    return this;
  }

  send(text) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  packet(text) {
    switch (text[0]) {
      case "0": {
        // Engine.IO open: pings come every pingInterval, and are missed after pingTimeout more
        const { pingInterval, pingTimeout } = JSON.parse(text.slice(1));
        this.pingWithin = pingInterval + pingTimeout;
        this.expectPing();
        this.send(this.auth ? `40${JSON.stringify(this.auth)}` : "40");
        return;
      }
      case "2":
        this.send("3");
        this.expectPing();
        return;
      case "1":
        this.end("transport close");
        return;
      case "4":
        this.message(text);
        return;
      default: // pong, noop: nothing to do
    }
  }

  message(text) {
    const type = text[1];
    let at = 2;
    while (at < text.length && text.charCodeAt(at) >= 48 && text.charCodeAt(at) <= 57) at += 1;
    const id = at > 2 ? Number(text.slice(2, at)) : null;
    const body = at < text.length ? JSON.parse(text.slice(at)) : undefined;
    if (type === "2") {
      if (this.events.listenerCount(body[0])) this.events.emit(...body);
    } else if (type === "3") {
      const ack = this.acks.get(id);
      this.acks.delete(id);
      if (ack) ack(null, ...body);
    } else if (type === "0") {
      this.connected = true;
      this.events.emit("connect");
    } else if (type === "4") {
      const error = new Error(body?.message ?? "connect error");
      error.data = body?.data;
      this.end(error);
    } else if (type === "1") {
      this.end("io server disconnect");
    }
  }

  expectPing() {
    clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(() => this.end("ping timeout"), this.pingWithin);
  }

  // The end of this socket, once: a reason string (disconnect) or, before connect, an Error
  // (connect_error). `ours`: closed by this side (a DISCONNECT sent, the WebSocket closed cleanly).
  end(reason, ours = false) {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.pingTimer);
    for (const ack of this.acks.values()) ack(new Error("socket has been disconnected"));
    this.acks.clear();
    const wasConnected = this.connected;
    this.connected = false;
    if (ours && this.ws.readyState === WebSocket.OPEN) {
      if (wasConnected) this.ws.send("41");
      this.ws.close();
    } else if (this.ws.readyState !== WebSocket.CLOSED) {
      this.ws.terminate();
    }
    if (wasConnected) this.events.emit("disconnect", typeof reason === "string" ? reason : "transport error");
    else if (!ours) this.events.emit("connect_error", reason instanceof Error ? reason : new Error(String(reason)));
  }

  close() {
    this.end("io client disconnect", true);
  }

  timeout(ms) {
    return {
      emit: (event, data, ack) => {
        const id = this.nextAck++;
        const timer = setTimeout(() => {
          this.acks.delete(id);
          ack(new Error("operation has timed out"));
        }, ms);
        this.acks.set(id, (error, ...answer) => {
          clearTimeout(timer);
          ack(error, ...answer);
        });
        this.send(`42${id}${JSON.stringify([event, data])}`);
      },
    };
  }
}

function connectOne(client, timeoutMs) {
  return new Promise((resolve) => {
    const started = now();
    let settled = false;
    const settle = (result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const options = {
      forceNew: true,
      transports: ["websocket"],
      // Browsers always offer permessage-deflate; so does this client unless told not to.
      ...(process.env.BENCH_CLIENT_DEFLATE === "0" ? { perMessageDeflate: false } : {}),
      reconnection: false,
      timeout: timeoutMs,
      auth: { token: client.token },
      query: { userId: String(client.id) },
    };
    const socket = LEAN ? new LeanSocket(url, options) : io(url, options);
    client.socket = socket;
    client.closing = false;
    client.tracked = {};
    // socket.io-client's own `timeout` covers the transport only: a server that never answers
    // the Socket.IO CONNECT would leave the handshake pending forever.
    const timer = setTimeout(() => {
      client.closing = true;
      socket.close();
      client.socket = null;
      settle({ ok: false, code: "no_answer", at: now() });
    }, timeoutMs);
    socket.on(event, (payload) => record(client, payload));
    for (const name of tracked) {
      socket.on(name, () => {
        if (client.tracked[name] === undefined) {
          client.tracked[name] = now();
          for (const waiter of eventWaiters) waiter.check();
        }
      });
    }
    socket.once("connect", () => {
      if (settled) return;
      client.connected = true;
      settle({ ok: true, lat: now() - started, at: now() });
    });
    socket.once("connect_error", (error) => {
      socket.close();
      if (client.socket === socket) client.socket = null;
      settle({ ok: false, code: error?.data?.code || error?.message || "error", at: now() });
    });
    socket.on("disconnect", (reason) => {
      const wasConnected = client.connected;
      client.connected = false;
      if (wasConnected && !client.closing) dropped[reason] = (dropped[reason] || 0) + 1;
      // Dropped before the server answered the handshake (e.g. no pings: the server is stuck).
      if (!settled) {
        socket.close();
        if (client.socket === socket) client.socket = null;
        settle({ ok: false, code: `dropped before connect: ${reason}`, at: now() });
      }
    });
  });
}

async function connectAll({ concurrency = 0, timeoutMs = 30000, deadlineMs = 0, limit = 0, phase = null }) {
  let todo = clients.filter((client) => !client.connected && (phase === null || client.phase !== phase));
  if (limit) todo = todo.slice(0, limit);
  if (phase !== null) for (const client of todo) client.phase = phase;
  const start = now();
  const results = [];
  let skipped = 0;
  if (!concurrency) {
    results.push(...(await Promise.all(todo.map((client) => connectOne(client, timeoutMs)))));
  } else {
    let next = 0;
    const worker = async () => {
      while (next < todo.length) {
        if (deadlineMs && now() - start > deadlineMs) {
          skipped = todo.length - next;
          next = todo.length;
          break;
        }
        const client = todo[next++];
        results.push(await connectOne(client, timeoutMs));
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, todo.length) }, worker));
  }
  const errors = {};
  for (const result of results) if (!result.ok) errors[result.code] = (errors[result.code] || 0) + 1;
  const ok = results.filter((result) => result.ok);
  return {
    ok: ok.length,
    failed: results.length - ok.length,
    skipped,
    errors,
    start,
    end: results.length ? Math.max(...results.map((result) => result.at)) : start,
    lat: ok.map((result) => Math.round(result.lat * 100) / 100),
    left: clients.filter((client) => !client.connected && (phase === null || client.phase !== phase)).length,
  };
}

function awaitEvent({ event: name, timeoutMs = 30000 }) {
  return new Promise((resolve) => {
    const connected = () => clients.filter((client) => client.connected);
    const finish = () => {
      eventWaiters.delete(waiter);
      clearTimeout(timer);
      const times = connected()
        .map((client) => client.tracked[name])
        .filter((at) => at !== undefined);
      resolve({ count: times.length, expected: connected().length, times });
    };
    const waiter = {
      check: () => {
        if (connected().every((client) => client.tracked[name] !== undefined)) finish();
      },
    };
    const timer = setTimeout(finish, timeoutMs);
    eventWaiters.add(waiter);
    waiter.check();
  });
}

function awaitKey({ key, expect, timeoutMs = 30000 }) {
  if (expect === undefined || expect === null) expect = clients.filter((client) => client.connected).length;
  return new Promise((resolve) => {
    const finish = () => {
      waiters.delete(waiter);
      clearTimeout(timer);
      const entry = received.get(key) || { times: [], dups: 0, sample: null };
      const gc = gcs;
      gcs = [];
      resolve({ count: entry.times.length, dups: entry.dups, times: entry.times, sample: entry.sample, gc });
    };
    const waiter = { key, expect, resolve: finish };
    const timer = setTimeout(finish, timeoutMs);
    waiters.add(waiter);
    const entry = received.get(key);
    if (entry && entry.times.length >= expect) finish();
  });
}

async function readAll({ event: readEvent, notificationId, count, timeoutMs = 60000 }) {
  const readers = clients.filter((client) => client.connected).slice(0, count);
  const start = now();
  const results = await Promise.all(
    readers.map(
      (client) =>
        new Promise((resolve) => {
          client.socket.timeout(timeoutMs).emit(readEvent, { notificationId }, (error, answer) => {
            resolve({ id: client.id, at: now(), error: error ? String(error.message || error) : null, answer });
          });
        }),
    ),
  );
  const acks = {};
  for (const result of results) {
    let label;
    if (result.error) label = `no ack (${result.error})`;
    else if (result.answer?.ok) label = `ok alreadyRead=${result.answer.alreadyRead}`;
    else label = `error ${result.answer?.error?.code ?? JSON.stringify(result.answer)}`;
    acks[label] = (acks[label] || 0) + 1;
  }
  const documentIds = [...new Set(results.map((result) => result.answer?.notificationId).filter(Boolean))];
  return {
    start,
    end: results.length ? Math.max(...results.map((result) => result.at)) : start,
    times: results.map((result) => result.at),
    acks,
    documentIds,
    readers: readers.map((client) => client.id),
  };
}

function disconnectAll() {
  let closed = 0;
  for (const client of clients) {
    if (client.socket) {
      client.closing = true;
      client.socket.close();
      client.socket = null;
      closed += 1;
    }
    client.connected = false;
  }
  return { closed };
}

function collect() {
  if (typeof globalThis.gc !== "function") return { ms: 0, exposed: false };
  const start = performance.now();
  globalThis.gc({ type: "minor" });
  return { ms: performance.now() - start, exposed: true };
}

async function run(command) {
  switch (command.cmd) {
    case "setup":
      url = command.url;
      event = command.event || event;
      tracked = command.track || [];
      clients = command.users.map(([id, token]) => ({ id, token, socket: null, connected: false, seen: new Set() }));
      return { count: clients.length };
    case "connect":
      return connectAll(command);
    case "await":
      return awaitKey(command);
    case "awaitEvent":
      return awaitEvent(command);
    case "read":
      return readAll(command);
    case "disconnect":
      return disconnectAll();
    case "status":
      return { connected: clients.filter((client) => client.connected).length, dropped };
    case "collect":
      return collect();
    case "gcs": {
      const gc = gcs;
      gcs = [];
      return { gc };
    }
    case "exit":
      disconnectAll();
      setTimeout(() => process.exit(0), 50);
      return {};
    default:
      throw new Error(`unknown command ${command.cmd}`);
  }
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  run(command).then(
    (answer) => send({ type: command.cmd, ref: command.ref ?? null, ...answer }),
    (error) => send({ type: "error", ref: command.ref ?? null, message: String(error?.stack ?? error) }),
  );
});
lines.on("close", () => {
  disconnectAll();
  setTimeout(() => process.exit(0), 50);
});

// The Node baseline: a minimal socket.io 4.8 server doing what the sidecar does on the wire, so
// every benchmark figure can be read as a ratio (sidecar / Node).
//
//   PORT=1338 JWT_SECRET=... WEBHOOK_SECRET=... [STRAPI_URL=... STRAPI_API_TOKEN=...] node server.mjs
//
// - Handshake: the same JWT (HS256, legacy {id} or refresh-mode {userId, type: "access"}) from
//   `auth.token` or `Authorization: Bearer`, verified with jsonwebtoken; an optional `userId` query
//   must match. With STRAPI_URL set, the user must exist and not be blocked (GET /api/users/:id,
//   cached USER_CACHE_TTL s, one lookup per user in flight, at most 50 connections to Strapi), as
//   the sidecar does. The socket joins `user-<id>`.
// - POST /webhooks/strapi (Authorization: Bearer WEBHOOK_SECRET): Strapi's webhook; on
//   entry.publish of a notification it emits `notificacion` (the seed's payload) to the rooms of
//   entry.notification_users in one `io.to(rooms).emit(...)`, after answering 202. No re-read.
// - GET /healthz.
import http from "node:http";
import { Server } from "socket.io";
import jwt from "jsonwebtoken";

const env = process.env;
const PORT = Number(env.PORT || 1338);
const HOST = env.HOST || "127.0.0.1";
const JWT_SECRET = env.JWT_SECRET;
const WEBHOOK_AUTH = `Bearer ${env.WEBHOOK_SECRET}`;
const STRAPI_URL = env.STRAPI_URL || "";
const STRAPI_TOKEN = env.STRAPI_API_TOKEN || "";
const USER_CACHE_TTL_MS = Number(env.USER_CACHE_TTL || 30) * 1000;
const NOTIFICATION_UID = "api::notification.notification";
const MAX_BODY = Number(env.WEBHOOK_MAX_BODY_BYTES || 64 * 1024 * 1024);

if (!JWT_SECRET || !env.WEBHOOK_SECRET) {
  console.error("JWT_SECRET and WEBHOOK_SECRET are required");
  process.exit(2);
}

const strapiAgent = new http.Agent({ keepAlive: true, maxSockets: 50 });

function getJson(path) {
  return new Promise((resolve, reject) => {
    const request = http.get(
      `${STRAPI_URL}${path}`,
      { agent: strapiAgent, headers: { Authorization: `Bearer ${STRAPI_TOKEN}`, Accept: "application/json" } },
      (response) => {
        const chunks = [];
        response.on("data", (chunk) => chunks.push(chunk));
        response.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          resolve({ status: response.statusCode, body: text ? JSON.parse(text) : null });
        });
        response.on("error", reject);
      },
    );
    request.setTimeout(10000, () => request.destroy(new Error("timeout")));
    request.on("error", reject);
  });
}

const userCache = new Map(); // id -> {until, blocked: true|false|null}
const userLookups = new Map(); // id -> Promise<blocked>

async function blockedState(id) {
  const cached = userCache.get(id);
  if (cached && cached.until > Date.now()) return cached.blocked;
  let lookup = userLookups.get(id);
  if (!lookup) {
    lookup = getJson(`/api/users/${id}`)
      .then(({ status, body }) => {
        if (status === 404) return null;
        if (status !== 200) throw new Error(`Strapi answered ${status}`);
        return Boolean(body && body.blocked);
      })
      .then((blocked) => {
        userCache.set(id, { until: Date.now() + USER_CACHE_TTL_MS, blocked });
        return blocked;
      })
      .finally(() => userLookups.delete(id));
    userLookups.set(id, lookup);
  }
  return lookup;
}

function refusal(message, code) {
  const error = new Error(message);
  error.data = { code };
  return error;
}

function userIdOf(claims) {
  const raw = "type" in claims || "userId" in claims ? (claims.type === "access" ? claims.userId : null) : claims.id;
  const id = typeof raw === "string" && /^\d{1,18}$/.test(raw) ? Number(raw) : raw;
  return Number.isSafeInteger(id) && id > 0 ? id : null;
}

const server = http.createServer(handle);
const io = new Server(server, { cors: { origin: "*" } });

io.use(async (socket, next) => {
  const header = socket.handshake.headers.authorization || "";
  const token = socket.handshake.auth?.token || (header.toLowerCase().startsWith("bearer ") ? header.slice(7).trim() : "");
  if (!token) return next(refusal("missing token", "missing_token"));
  let claims;
  try {
    claims = jwt.verify(token, JWT_SECRET, { algorithms: ["HS256"] });
  } catch (error) {
    const expired = error.name === "TokenExpiredError";
    return next(refusal(expired ? "token expired" : "invalid token", expired ? "expired_token" : "invalid_token"));
  }
  const id = userIdOf(claims);
  if (id === null) return next(refusal("token names no user", "invalid_token"));
  const claimed = socket.handshake.query.userId;
  if (claimed !== undefined && claimed !== "" && claimed !== String(id)) {
    return next(refusal("user mismatch", "user_mismatch"));
  }
  if (STRAPI_URL) {
    let blocked;
    try {
      blocked = await blockedState(id);
    } catch {
      return next(refusal("cannot check the user", "auth_unavailable"));
    }
    if (blocked === null) return next(refusal("unknown user", "unknown_user"));
    if (blocked) return next(refusal("blocked user", "blocked_user"));
  }
  socket.data.userId = id;
  next();
});

io.on("connection", (socket) => {
  socket.join(`user-${socket.data.userId}`);
});

function reply(res, status, body) {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}

function handle(req, res) {
  if (req.method === "GET" && req.url === "/healthz") return reply(res, 200, { status: "ok" });
  if (req.method !== "POST" || req.url !== "/webhooks/strapi") return reply(res, 404, { error: "not found" });
  if (req.headers.authorization !== WEBHOOK_AUTH) return reply(res, 401, { error: "unauthorized" });
  const chunks = [];
  let size = 0;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size <= MAX_BODY) chunks.push(chunk);
  });
  req.on("end", () => {
    if (size > MAX_BODY) return reply(res, 413, { error: "too large" });
    let payload;
    try {
      payload = JSON.parse(Buffer.concat(chunks).toString());
    } catch {
      return reply(res, 400, { error: "not JSON" });
    }
    const entry = payload && payload.entry;
    if (payload.event !== "entry.publish" || payload.uid !== NOTIFICATION_UID || !entry) {
      return reply(res, 202, { accepted: true, outcome: "ignored" });
    }
    reply(res, 202, { accepted: true, outcome: "announced" });
    const rooms = (entry.notification_users || []).map((user) => `user-${user.id}`);
    console.log(`${new Date().toISOString()} ${payload.event} ${entry.documentId}: ${size} bytes, ${rooms.length} rooms`);
    if (rooms.length) {
      io.to(rooms).emit("notificacion", {
        mensaje: entry.message ?? null,
        id: entry.id ?? null,
        url: entry.url || null,
        document: entry.document ?? null,
        title: entry.date || null,
        documentId: entry.documentId ?? null,
      });
    }
  });
}

// Node's default keep-alive timeout (5 s) unless KEEP_ALIVE_TIMEOUT (seconds) says otherwise.
if (env.KEEP_ALIVE_TIMEOUT) server.keepAliveTimeout = Number(env.KEEP_ALIVE_TIMEOUT) * 1000;
server.listen(PORT, HOST, () => console.log(`node baseline listening on http://${HOST}:${PORT}`));
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    io.close();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}

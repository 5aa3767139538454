// The seed's frontend flow with the official socket.io-client, driven over stdin/stdout.
//
//   node seed-client.mjs <strapiUrl> <sidecarUrl> <identifier> <password> [--token T] [--user-id N]
//
// Logs in with POST /api/auth/local, reads GET /api/users/me, then connects exactly as the seed's
// page does: io(url, { auth: { token: jwt }, query: { userId: id } }). With --token (and
// optionally --user-id) it skips the login and uses that token and userId instead; with
// --no-token it connects with no token at all.
// Every line it prints is JSON: {"type": "connected"|"connect_error"|"event"|"ack"|"login"|"disconnect", ...}.
// Every line it reads is a command: {"emit": name, "data": any, "ack": bool, "ref": any} or {"close": true}.
import { io } from "socket.io-client";
import readline from "node:readline";

const [strapiUrl, sidecarUrl, identifier, password, ...rest] = process.argv.slice(2);
const option = (name) => {
  const index = rest.indexOf(name);
  return index >= 0 ? rest[index + 1] : undefined;
};
const print = (message) => process.stdout.write(JSON.stringify(message) + "\n");

async function login() {
  const response = await fetch(`${strapiUrl}/api/auth/local`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ identifier, password }),
  });
  const data = await response.json();
  if (!data.jwt) throw new Error(`login failed: ${JSON.stringify(data)}`);
  const me = await fetch(`${strapiUrl}/api/users/me`, { headers: { Authorization: `Bearer ${data.jwt}` } });
  if (!me.ok) throw new Error(`/api/users/me answered ${me.status}`);
  const user = await me.json();
  print({ type: "login", userId: user.id });
  return { jwt: data.jwt, id: user.id };
}

async function main() {
  let jwt = option("--token");
  let id = option("--user-id");
  const anonymous = rest.includes("--no-token");
  if (!jwt && !anonymous) ({ jwt, id } = await login());
  const query = id === undefined ? {} : { userId: id };
  const transports = option("--transports");
  const socket = io(sidecarUrl, {
    auth: anonymous ? {} : { token: jwt },
    query,
    reconnection: rest.includes("--reconnect"),
    ...(transports ? { transports: transports.split(",") } : {}),
  });
  socket.on("connect", () => print({ type: "connected", id: socket.id }));
  socket.on("connect_error", (err) => print({ type: "connect_error", message: err.message, data: err.data ?? null }));
  socket.on("disconnect", (reason) => print({ type: "disconnect", reason }));
  socket.onAny((event, ...args) => print({ type: "event", event, args }));

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    if (command.close) break;
    if (command.ack) {
      socket.timeout(10000).emit(command.emit, command.data, (err, answer) => {
        print({ type: "ack", ref: command.ref ?? null, error: err ? String(err) : null, answer: answer ?? null });
      });
    } else {
      socket.emit(command.emit, command.data);
    }
  }
  socket.close();
}

main().catch((error) => {
  print({ type: "fatal", message: String(error?.message ?? error) });
  process.exit(1);
});

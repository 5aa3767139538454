// The demo page: the seed's frontend flow, plus an inbox and a compose form.
//
// 1. Sign in with Strapi: POST {strapi}/api/auth/local, then GET {strapi}/api/users/me.
// 2. Connect to the sidecar: io(sidecarUrl, { auth: { token: jwt }, query: { userId: id } }).
// 3. Each `notificacion` is rendered with data-id = its id; a click emits `notification:read`
//    with { notificationId } (the data-id string, as the seed does) and waits for the ack.
"use strict";

const EVENT_NOTIFICATION = "notificacion";
const EVENT_READ = "notification:read";
const EVENT_READ_ALL = "notification:read-all";
const EVENT_REMOVED = "notification:removed";
const EVENT_SYNC = "notification:sync";
const ACK_TIMEOUT_MS = 10000;
const SESSION_KEY = "sidecar-demo-session";
const WIRE_LOG_LINES = 40;

const $ = (id) => document.getElementById(id);
const state = { config: null, jwt: null, user: null, socket: null, items: new Map() };

// -- small helpers --------------------------------------------------------------------------

async function getJson(url, options = {}) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return { ok: response.ok, status: response.status, body };
}

function authHeaders() {
  return { Authorization: `Bearer ${state.jwt}` };
}

function safeHref(url) {
  if (!url) return null;
  try {
    const parsed = new URL(url, window.location.href);
    return ["http:", "https:"].includes(parsed.protocol) ? parsed.href : null;
  } catch {
    return null;
  }
}

function when(title, receivedAt) {
  const stamp = title ? Date.parse(title) : NaN;
  if (title && Number.isNaN(stamp)) return title; // `title` carries the notification's `date`, any text
  const seconds = Math.round((Date.now() - (Number.isNaN(stamp) ? receivedAt : stamp)) / 1000);
  if (seconds < 45) return "just now";
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(Number.isNaN(stamp) ? receivedAt : stamp).toLocaleString();
}

function wire(direction, text) {
  const log = $("wire-log");
  const line = document.createElement("li");
  const time = document.createElement("span");
  time.className = "when";
  time.textContent = new Date().toLocaleTimeString() + " ";
  const body = document.createElement("span");
  body.className = direction;
  body.textContent = `${{ in: "←", out: "→", bad: "✕", info: "•" }[direction] || "•"} ${text}`;
  line.append(time, body);
  log.prepend(line);
  while (log.children.length > WIRE_LOG_LINES) log.lastChild.remove();
}

function setStatus(kind, text) {
  $("status").dataset.state = kind;
  $("status-text").textContent = text;
}

// -- sign in --------------------------------------------------------------------------------

function renderQuickUsers() {
  const holder = $("quick-users");
  holder.replaceChildren();
  for (const user of state.config.demoUsers) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.username = user.username;
    const avatar = document.createElement("span");
    avatar.className = "avatar";
    avatar.textContent = user.username.slice(0, 1);
    button.append(avatar, document.createTextNode(user.username));
    button.addEventListener("click", () => {
      $("identifier").value = user.username;
      $("password").value = user.password;
      $("signin-form").requestSubmit();
    });
    holder.append(button);
  }
}

async function signIn(identifier, password) {
  const strapi = state.config.strapiUrl;
  const login = await getJson(`${strapi}/api/auth/local`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ identifier, password }),
  });
  if (!login.ok || !login.body?.jwt) {
    throw new Error(login.body?.error?.message || `Strapi answered ${login.status}`);
  }
  await startSession(login.body.jwt);
}

async function startSession(jwt) {
  // Exactly the seed's check: ask Strapi who the token belongs to, then connect with that id.
  const me = await getJson(`${state.config.strapiUrl}/api/users/me`, { headers: { Authorization: `Bearer ${jwt}` } });
  if (!me.ok) throw new Error(`Strapi refused the token (${me.status})`);
  state.jwt = jwt;
  state.user = me.body;
  sessionStorage.setItem(SESSION_KEY, jwt);
  showApp();
  connect();
  await Promise.all([loadPeople(), loadInbox()]);
}

function signOut() {
  if (state.socket) state.socket.close();
  state.socket = null;
  state.jwt = null;
  state.user = null;
  state.items.clear();
  sessionStorage.removeItem(SESSION_KEY);
  $("notifications").replaceChildren();
  $("wire-log").replaceChildren();
  updateCounts();
  showSignIn();
}

function showSignIn() {
  $("session").hidden = true;
  $("app-view").hidden = true;
  $("signin-view").hidden = false;
  document.body.dataset.view = "signin";
  $("identifier").focus();
}

function showApp() {
  $("signin-view").hidden = true;
  $("app-view").hidden = false;
  $("session").hidden = false;
  $("me-name").textContent = state.user.username;
  $("me-avatar").textContent = state.user.username.slice(0, 1);
  document.body.dataset.view = "app";
  document.body.dataset.userId = String(state.user.id);
}

// -- the socket -----------------------------------------------------------------------------

function connect() {
  setStatus("connecting", "Connecting…");
  const socket = io(state.config.sidecarUrl, { auth: { token: state.jwt }, query: { userId: state.user.id } });
  state.socket = socket;
  wire("out", `connect ${state.config.sidecarUrl} auth:{token} query:{userId:${state.user.id}}`);
  socket.on("connect", () => {
    setStatus("live", "Live");
    wire("in", `connected as user ${state.user.id} (room user-${state.user.id})`);
  });
  socket.on("disconnect", (reason) => {
    setStatus("connecting", "Reconnecting…");
    wire("bad", `disconnected: ${reason}`);
  });
  socket.on("connect_error", (error) => {
    setStatus("error", "Not connected");
    wire("bad", `connect_error: ${error.message}`);
  });
  socket.onAny((event, ...args) => wire("in", `${event} ${args.map((arg) => JSON.stringify(arg)).join(" ")}`));
  socket.on(EVENT_NOTIFICATION, (data) => upsert(data, { fresh: true, read: false }));
  // Beyond the seed, when the sidecar sends them: reads made in another tab, removals, and the
  // unread notifications it hands over on (re)connect, which covers anything sent while offline.
  socket.on(EVENT_READ, (data) => readElsewhere([data && data.documentId]));
  socket.on(EVENT_READ_ALL, (data) => readElsewhere((data && data.documentIds) || []));
  socket.on(EVENT_REMOVED, (data) => remove(data && data.documentId));
  socket.on(EVENT_SYNC, (data) => {
    for (const item of (data && data.items) || []) {
      if (item && item.documentId && item.id !== undefined) upsert(item, { fresh: false, read: false });
    }
  });
}

function readElsewhere(documentIds) {
  for (const documentId of documentIds) {
    const element = state.items.get(documentId);
    if (element) setRead(element, true);
  }
}

function remove(documentId) {
  const element = state.items.get(documentId);
  if (!element) return;
  element.remove();
  state.items.delete(documentId);
  updateCounts();
}

function markRead(element) {
  if (!element || element.classList.contains("is-read") || element.classList.contains("is-pending")) return;
  if (!state.socket || !state.socket.connected) {
    fail(element, "Offline: try again when live");
    return;
  }
  const notificationId = element.dataset.id; // a string from the DOM, as in the seed
  element.classList.add("is-pending");
  element.classList.remove("is-failed");
  element.querySelector(".state").textContent = "Marking…";
  wire("out", `${EVENT_READ} ${JSON.stringify({ notificationId })}`);
  state.socket.timeout(ACK_TIMEOUT_MS).emit(EVENT_READ, { notificationId }, (error, ack) => {
    element.classList.remove("is-pending");
    if (error) {
      wire("bad", `${EVENT_READ}: no answer within ${ACK_TIMEOUT_MS / 1000} s`);
      fail(element, "No answer: click to retry");
      return;
    }
    wire(ack && ack.ok ? "in" : "bad", `ack ${JSON.stringify(ack)}`);
    if (ack && ack.ok) {
      setRead(element, true);
    } else {
      fail(element, (ack && ack.error && ack.error.message) || "Failed: click to retry");
    }
  });
}

function fail(element, text) {
  element.classList.add("is-failed");
  element.querySelector(".state").textContent = text;
}

// -- the inbox ------------------------------------------------------------------------------

function upsert(data, { fresh, read }) {
  const key = data.documentId || String(data.id);
  let element = state.items.get(key);
  if (!element) {
    element = $("notification-template").content.firstElementChild.cloneNode(true);
    element.dataset.receivedAt = String(Date.now());
    state.items.set(key, element);
    if (fresh) element.classList.add("is-new");
  }
  place(element, Number(data.id));
  element.setAttribute("data-id", data.id); // the seed's contract: data-id is the payload's id
  if (data.documentId) element.dataset.documentId = data.documentId;
  element.dataset.title = data.title || "";
  element.querySelector(".message").textContent = data.mensaje || "(no message)";
  const link = element.querySelector(".link");
  const href = safeHref(data.url);
  link.hidden = !href;
  if (href) {
    link.href = href;
    link.textContent = data.url;
  }
  setRead(element, read || element.classList.contains("is-read"));
  refreshTime(element);
}

function place(element, id) {
  // Newest first: a published notification's id grows with every publish.
  const list = $("notifications");
  const before = [...list.children].find((other) => other !== element && Number(other.dataset.id) < id);
  if (element.parentElement !== list || element.nextElementSibling !== (before || null)) {
    list.insertBefore(element, before || null);
  }
}

function setRead(element, read) {
  element.classList.toggle("is-read", read);
  element.classList.toggle("is-unread", !read);
  element.classList.remove("is-failed");
  element.dataset.read = String(read);
  element.setAttribute("aria-label", `${element.querySelector(".message").textContent} (${read ? "read" : "unread"})`);
  element.querySelector(".state").textContent = read ? "✓ Read" : "Mark read";
  updateCounts();
}

function refreshTime(element) {
  const time = element.querySelector("time");
  time.textContent = when(element.dataset.title, Number(element.dataset.receivedAt));
  time.title = element.dataset.title || new Date(Number(element.dataset.receivedAt)).toLocaleString();
}

function updateCounts() {
  const unread = [...state.items.values()].filter((element) => !element.classList.contains("is-read")).length;
  const badge = $("unread-count");
  badge.textContent = String(unread);
  badge.hidden = unread === 0;
  $("empty").hidden = state.items.size > 0;
  document.title = `${unread ? `(${unread}) ` : ""}Live notifications · Strapi sidecar demo`;
}

async function loadInbox() {
  const inbox = await getJson("/api/inbox", { headers: authHeaders() });
  if (!inbox.ok) {
    wire("bad", `could not load earlier notifications (${inbox.status})`);
    return;
  }
  for (const item of inbox.body) upsert(item, { fresh: false, read: item.read });
}

// -- compose --------------------------------------------------------------------------------

async function loadPeople() {
  const people = await getJson("/api/users", { headers: authHeaders() });
  const holder = $("people");
  holder.replaceChildren();
  if (!people.ok) return;
  for (const person of people.body) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = String(person.id);
    box.checked = person.id === state.user.id;
    const mine = person.id === state.user.id ? " (you)" : "";
    label.append(box, document.createTextNode(person.username + mine));
    holder.append(label);
  }
}

function toggleAllUsers() {
  const all = $("all-users").checked;
  const people = $("people");
  people.classList.toggle("is-disabled", all);
  for (const box of people.querySelectorAll("input")) box.disabled = all;
}

async function publish(event) {
  event.preventDefault();
  const allUsers = $("all-users").checked;
  const userIds = [...$("people").querySelectorAll("input:checked")].map((box) => Number(box.value));
  const feedback = $("compose-feedback");
  if (!allUsers && userIds.length === 0) {
    showFeedback("Choose at least one recipient, or all users.", true);
    return;
  }
  const button = $("send-button");
  button.disabled = true;
  try {
    const sent = await getJson("/api/notifications", {
      method: "POST",
      headers: { ...authHeaders(), "Content-Type": "application/json" },
      body: JSON.stringify({ message: $("message").value, url: $("url").value, userIds, allUsers }),
    });
    if (!sent.ok) throw new Error(sent.body?.error || `the demo server answered ${sent.status}`);
    const audience = allUsers ? "all users" : `${userIds.length} user${userIds.length === 1 ? "" : "s"}`;
    showFeedback(`Published to ${audience}. Strapi → webhook → sidecar → Socket.IO.`, false);
    $("message").value = "";
    $("url").value = "";
  } catch (error) {
    showFeedback(`Not sent: ${error.message}`, true);
  } finally {
    button.disabled = false;
  }
  clearTimeout(feedback.timer);
  feedback.timer = setTimeout(() => (feedback.hidden = true), 6000);
}

function showFeedback(text, isError) {
  const feedback = $("compose-feedback");
  feedback.textContent = text;
  feedback.classList.toggle("is-error", isError);
  feedback.hidden = false;
}

// -- start ----------------------------------------------------------------------------------

async function main() {
  state.config = (await getJson("/config.json")).body;
  renderQuickUsers();
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("signin-error");
    const button = $("signin-button");
    error.hidden = true;
    button.disabled = true;
    try {
      await signIn($("identifier").value.trim(), $("password").value);
    } catch (failure) {
      error.textContent =
        failure instanceof TypeError ? `Could not reach Strapi at ${state.config.strapiUrl}.` : failure.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  $("sign-out").addEventListener("click", signOut);
  $("compose-form").addEventListener("submit", publish);
  $("all-users").addEventListener("change", toggleAllUsers);
  const list = $("notifications");
  // As the seed: a click anywhere in a notification (its link too) marks it read.
  list.addEventListener("click", (event) => markRead(event.target.closest(".notification")));
  list.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      markRead(event.target.closest(".notification"));
    }
  });
  setInterval(() => state.items.forEach(refreshTime), 30000);

  const saved = sessionStorage.getItem(SESSION_KEY); // per tab: two tabs can be two users
  let resumed = false;
  if (saved) {
    try {
      await startSession(saved);
      resumed = true;
    } catch {
      sessionStorage.removeItem(SESSION_KEY);
    }
  }
  if (!resumed) showSignIn();
  document.body.dataset.ready = "true";
}

main();
